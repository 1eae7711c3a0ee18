package rollup

import (
	"bytes"
	"errors"
	"fmt"

	"github.com/vmihailenco/msgpack/v5"

	"github.com/tally-edge/tally/wire"
)

// EncodeBatches splits a flush into spool payloads of at most per
// contributions each. A payload is the msgpack array of contributions,
// encoded as a wire frame carries it, so the shipper frames it as is
// (wire.RawBatch) with the spool's sequence number.
func EncodeBatches(contribs []wire.Contribution, per int) ([][]byte, error) {
	if per <= 0 {
		per = len(contribs)
	}
	var out [][]byte
	for len(contribs) > 0 {
		n := min(per, len(contribs))
		b, err := wire.EncodeContributions(contribs[:n])
		if err != nil {
			return nil, err
		}
		out = append(out, b)
		contribs = contribs[n:]
	}
	return out, nil
}

// DecodeBatch decodes a spool payload written by EncodeBatches.
func DecodeBatch(b []byte) ([]wire.Contribution, error) {
	var cs []wire.Contribution
	if err := msgpack.Unmarshal(b, &cs); err != nil {
		return nil, fmt.Errorf("decode spooled batch: %w", err)
	}
	return cs, nil
}

// FirstCampaign returns the campaign of the first contribution of a spool
// payload, decoding only that one: the shipper routes a batch, whose
// contributions share an owner, by it.
func FirstCampaign(b []byte) (string, error) {
	d := msgpack.NewDecoder(bytes.NewReader(b))
	n, err := d.DecodeArrayLen()
	if err != nil {
		return "", fmt.Errorf("decode spooled batch: %w", err)
	}
	if n <= 0 {
		return "", errors.New("decode spooled batch: no contributions")
	}
	var c wire.Contribution
	if err := d.Decode(&c); err != nil {
		return "", fmt.Errorf("decode spooled batch: %w", err)
	}
	return c.Series.Campaign, nil
}
