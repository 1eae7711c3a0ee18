package graphql

// The schema (schema/*.graphqls) is compiled to generated.go and
// models_gen.go by gqlgen, at the version go.mod pins.
//go:generate go run github.com/99designs/gqlgen@v0.17.98 generate --config gqlgen.yml
