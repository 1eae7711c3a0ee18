// Package tools is a separate Go module for what builds and checks Tally's
// deployment artifacts with heavy dependencies the binaries must not carry:
// the Grafana dashboards (generated with Grafana's foundation SDK), the
// Kubernetes manifests (rendered with kustomize, decoded strictly against
// the Kubernetes API types, checked against our policy) and the packages
// (nfpm). The main module stays light; `make test` runs this module's
// tests too.
package tools
