package event

import (
	"strings"
	"sync"
)

// DeviceCache remembers DeviceOf per user-agent string. User agents repeat
// heavily, and classifying one costs a few hundred nanoseconds. It is safe
// for concurrent use and bounded: when full it starts over.
type DeviceCache struct {
	max int

	mu sync.RWMutex
	m  map[string]string
}

// NewDeviceCache returns a cache of at most max user agents (0: 65536).
func NewDeviceCache(max int) *DeviceCache {
	if max <= 0 {
		max = 65536
	}
	return &DeviceCache{max: max, m: make(map[string]string, 1024)}
}

// Device returns DeviceOf(ua), from the cache when it can.
func (c *DeviceCache) Device(ua string) string {
	if c == nil {
		return DeviceOf(ua)
	}
	c.mu.RLock()
	d, ok := c.m[ua]
	c.mu.RUnlock()
	if ok {
		return d
	}
	d = DeviceOf(ua)
	c.mu.Lock()
	if len(c.m) >= c.max {
		clear(c.m)
	}
	// Clone: ua may alias a buffer the caller reuses.
	c.m[strings.Clone(ua)] = d
	c.mu.Unlock()
	return d
}
