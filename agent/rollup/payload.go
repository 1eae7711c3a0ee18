package rollup

import (
	"fmt"

	"github.com/vmihailenco/msgpack/v5"

	"github.com/tally-edge/tally/wire"
)

// DecodeBatch decodes a spool payload: the msgpack array of contributions
// a wire frame carries (see ship.Batcher).
func DecodeBatch(b []byte) ([]wire.Contribution, error) {
	var cs []wire.Contribution
	if err := msgpack.Unmarshal(b, &cs); err != nil {
		return nil, fmt.Errorf("decode spooled batch: %w", err)
	}
	return cs, nil
}
