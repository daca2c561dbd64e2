package checkpoint

import (
	"bytes"
	"compress/gzip"
	"fmt"
	"hash/fnv"
	"io"
)

func segmentOf(field string) int {
	h := fnv.New32a()
	_, _ = h.Write([]byte(field))
	return int(h.Sum32() % kvSegments)
}

// encodeSegment writes the records as a binary sequence (see codec.go),
// gzipped.
func (k *KV) encodeSegment(seg map[string]string) ([]byte, error) {
	var w writer
	for f, v := range seg {
		w.str(f)
		w.str(v)
	}
	var buf bytes.Buffer
	zw, ok := k.zips.Get().(*gzip.Writer)
	if ok {
		zw.Reset(&buf)
	} else {
		zw, _ = gzip.NewWriterLevel(&buf, gzip.BestSpeed) // a valid level: no error
	}
	defer k.zips.Put(zw)
	if _, err := zw.Write(w.b); err != nil {
		return nil, err
	}
	if err := zw.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

func decodeSegment(value []byte) (map[string]string, error) {
	zr, err := gzip.NewReader(bytes.NewReader(value))
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrCorrupt, err)
	}
	raw, err := io.ReadAll(zr)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrCorrupt, err)
	}
	r := reader{b: raw}
	seg := map[string]string{}
	for r.more() {
		f, v := r.str(), r.str()
		if r.err != nil {
			break
		}
		if _, err := decodeKey(f); err != nil {
			return nil, err
		}
		seg[f] = v
	}
	if r.err != nil {
		return nil, r.err
	}
	return seg, nil
}
