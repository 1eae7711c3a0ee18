package event

import (
	"strings"
	"sync"
)

// DeviceCache remembers DeviceOf per user-agent string. User agents repeat
// heavily, and classifying one costs a few hundred nanoseconds. It is safe
// for concurrent use and bounded in bytes: when its keys would exceed the
// bound it starts over. Normalize cuts user agents to MaxUserAgent before
// they reach it.
type DeviceCache struct {
	maxBytes int

	mu    sync.RWMutex
	m     map[string]string
	bytes int
}

// DefaultDeviceCacheBytes bounds a DeviceCache's keys when NewDeviceCache
// is given 0: 4 MiB, tens of thousands of real user agents.
const DefaultDeviceCacheBytes = 4 << 20

// NewDeviceCache returns a cache whose keys take at most maxBytes
// (0: DefaultDeviceCacheBytes).
func NewDeviceCache(maxBytes int) *DeviceCache {
	if maxBytes <= 0 {
		maxBytes = DefaultDeviceCacheBytes
	}
	return &DeviceCache{maxBytes: maxBytes, m: make(map[string]string, 1024)}
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
	if len(ua) > c.maxBytes {
		return d
	}
	c.mu.Lock()
	if c.bytes+len(ua) > c.maxBytes {
		clear(c.m)
		c.bytes = 0
	}
	if _, ok := c.m[ua]; !ok {
		// Clone: ua may alias a buffer the caller reuses.
		c.m[strings.Clone(ua)] = d
		c.bytes += len(ua)
	}
	c.mu.Unlock()
	return d
}

// Bytes returns the bytes the cache's keys take.
func (c *DeviceCache) Bytes() int {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return c.bytes
}
