package meter

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"os"
	"path/filepath"
	"sync"
)

// SpoolFile keeps the batches the sink has not taken yet in a file whose
// space is reserved when it is opened, so writing it needs no new disk
// space: a disk that fills up after the start still has room for the usage
// waiting to be written. The file holds two slots; Save writes the whole
// backlog to the slot not holding the latest copy and syncs it, so a write
// cut short (a crash, a power loss) leaves the previous copy readable.
//
// Reserving space works on filesystems that write in place (ext4, xfs,
// tmpfs). On copy-on-write filesystems (btrfs, ZFS) an overwrite needs new
// blocks, so a full disk can still refuse it.
type SpoolFile struct {
	mu   sync.Mutex
	f    *os.File
	path string
	slot int64  // bytes per slot
	gen  uint64 // generation of the latest copy
}

var _ Journal = (*SpoolFile)(nil)

// ErrSpoolFileFull: the backlog does not fit in a slot of the spool file
// (meter.spool_bytes).
var ErrSpoolFileFull = errors.New("meter: the usage backlog does not fit in the spool file (meter.spool_bytes)")

// Slot header: magic (8 bytes), generation (8), payload length (4), CRC-32C
// of the payload (4); then the payload, the batches as JSON.
const (
	spoolMagic     = "TGSPOOL1"
	spoolHeaderLen = 24
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// OpenSpoolFile opens (creating it if needed) the spool file at path and
// reserves size bytes of disk for it. A file of another size, left by a
// different meter.spool_bytes, is rewritten at the new size, keeping what
// it holds when that fits.
func OpenSpoolFile(path string, size int64) (*SpoolFile, error) {
	if size < 2*4096 {
		return nil, fmt.Errorf("meter: spool file %s: size %d is below 8 KiB", path, size)
	}
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("meter: spool file: %w", err)
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("meter: spool file: %w", err)
	}
	s := &SpoolFile{f: f, path: path, slot: fi.Size() / 2}
	if fi.Size() == size {
		return s, nil
	}
	if fi.Size() == 0 {
		if err := reserve(f, size); err != nil {
			f.Close()
			os.Remove(path)
			return nil, fmt.Errorf("meter: reserving %d bytes for the usage spool file %s: %w", size, path, err)
		}
		s.slot = size / 2
		return s, syncDir(path)
	}
	// Resize: copy what it holds into a new file of the new size, then
	// rename it over the old one.
	bs, err := s.Load()
	if err != nil {
		f.Close()
		return nil, err
	}
	f.Close()
	tmp := path + ".new"
	os.Remove(tmp)
	ns, err := OpenSpoolFile(tmp, size)
	if err != nil {
		return nil, err
	}
	if err := ns.Save(bs); err != nil {
		ns.Close()
		os.Remove(tmp)
		return nil, fmt.Errorf("meter: resizing the spool file %s to %d bytes: %w", path, size, err)
	}
	if err := os.Rename(tmp, path); err != nil {
		ns.Close()
		return nil, fmt.Errorf("meter: spool file: %w", err)
	}
	ns.path = path
	return ns, syncDir(path)
}

// Save replaces what the file holds with bs (nil: nothing waits) and syncs.
func (s *SpoolFile) Save(bs []*Batch) error {
	if bs == nil {
		bs = []*Batch{}
	}
	payload, err := json.Marshal(bs)
	if err != nil {
		return err
	}
	if int64(spoolHeaderLen+len(payload)) > s.slot {
		return fmt.Errorf("%w: %d batches take %d bytes, a slot holds %d", ErrSpoolFileFull, len(bs), len(payload), s.slot-spoolHeaderLen)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	gen := s.gen + 1
	buf := make([]byte, spoolHeaderLen, spoolHeaderLen+len(payload))
	copy(buf, spoolMagic)
	binary.BigEndian.PutUint64(buf[8:], gen)
	binary.BigEndian.PutUint32(buf[16:], uint32(len(payload)))
	binary.BigEndian.PutUint32(buf[20:], crc32.Checksum(payload, castagnoli))
	buf = append(buf, payload...)
	if _, err := s.f.WriteAt(buf, int64(gen%2)*s.slot); err != nil {
		return fmt.Errorf("meter: writing the spool file %s: %w", s.path, err)
	}
	if err := s.f.Sync(); err != nil {
		return fmt.Errorf("meter: syncing the spool file %s: %w", s.path, err)
	}
	s.gen = gen
	return nil
}

// Load returns the batches of the latest intact copy, in the order saved.
func (s *SpoolFile) Load() ([]*Batch, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	var best []byte
	var bestGen uint64
	for i := range int64(2) {
		gen, payload, ok := s.readSlot(i * s.slot)
		if ok && (best == nil || gen > bestGen) {
			bestGen, best = gen, payload
		}
	}
	if best == nil {
		return nil, nil
	}
	s.gen = bestGen
	var bs []*Batch
	if err := json.Unmarshal(best, &bs); err != nil {
		return nil, fmt.Errorf("meter: spool file %s: %w", s.path, err)
	}
	return bs, nil
}

// readSlot returns the slot's copy when its header and checksum hold.
func (s *SpoolFile) readSlot(off int64) (uint64, []byte, bool) {
	var h [spoolHeaderLen]byte
	if _, err := s.f.ReadAt(h[:], off); err != nil || string(h[:8]) != spoolMagic {
		return 0, nil, false
	}
	n := int64(binary.BigEndian.Uint32(h[16:]))
	if n > s.slot-spoolHeaderLen {
		return 0, nil, false
	}
	payload := make([]byte, n)
	if _, err := s.f.ReadAt(payload, off+spoolHeaderLen); err != nil && !errors.Is(err, io.EOF) {
		return 0, nil, false
	}
	if crc32.Checksum(payload, castagnoli) != binary.BigEndian.Uint32(h[20:]) {
		return 0, nil, false
	}
	return binary.BigEndian.Uint64(h[8:]), payload, true
}

// Path is the file's name.
func (s *SpoolFile) Path() string { return s.path }

// Close closes the file. It is safe on a nil *SpoolFile.
func (s *SpoolFile) Close() error {
	if s == nil {
		return nil
	}
	return s.f.Close()
}

func syncDir(path string) error {
	d, err := os.Open(filepath.Dir(path))
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

// writeZeros fills f with size zero bytes and syncs it.
func writeZeros(f *os.File, size int64) error {
	zero := make([]byte, 64<<10)
	for off := int64(0); off < size; off += int64(len(zero)) {
		n := min(int64(len(zero)), size-off)
		if _, err := f.WriteAt(zero[:n], off); err != nil {
			return err
		}
	}
	return f.Sync()
}
