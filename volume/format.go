package volume

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"hash/crc32"
	"math/bits"

	"github.com/archipelago-go/archipelago/errs"
)

// On-storage formats (see docs/maps.md). Every object the engine writes to
// the maps store is a "dual-slot" object: two fixed-size slots, each a
// complete, checksummed copy of the object's payload with a sequence number.
//
// Version 2 keeps the newest state in both slots: an update writes the new
// state with the next sequence number into one slot and then into the
// other, each write FUA, the slot that does not hold the current state
// first. So one damaged slot never hides the newest state: a read that
// finds one valid slot takes it (the other was torn by a crash during an
// update that was never acknowledged, or is damaged), and two valid slots
// with different sequence numbers mean the second write of an update was
// torn (the higher one is the newest). No valid slot is an error.
//
// Version 1 wrote only the older slot per update (slot i held an i-parity
// sequence number) and read the valid slot with the higher number; its
// objects are read by that rule and rewritten in version 2 when the engine
// next writes them or reads them under the volume's lock.
//
// Slot layout (all integers big-endian):
//
//	magic    [4]byte  "AGVH" header, "AGVP" map page, "AGVE" epoch record
//	version  uint16   formatVersion (1 or 2 is read)
//	reserved uint16   0
//	seq      uint64   version 1: slot i always holds an i-parity number
//	length   uint32   payload length
//	payload  [length]byte
//	crc      uint32   CRC-32C of everything above
//	(zero padding up to the slot size)

const (
	formatVersion = 2
	slotHeadLen   = 20
	slotCRCLen    = 4
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// kind describes one dual-slot object type.
type kind struct {
	magic [4]byte
	slot  int // slot size in bytes; the object is 2*slot bytes
	what  string
}

var (
	kindHeader = kind{[4]byte{'A', 'G', 'V', 'H'}, 8192, "volume header"}
	kindPage   = kind{[4]byte{'A', 'G', 'V', 'P'}, 4160, "map page"}
	kindEpoch  = kind{[4]byte{'A', 'G', 'V', 'E'}, 64, "epoch record"}
)

// encodeSlot returns one slot (k.slot bytes) of today's version holding
// payload with seq.
func encodeSlot(k kind, seq uint64, payload []byte) ([]byte, error) {
	if slotHeadLen+len(payload)+slotCRCLen > k.slot {
		return nil, fmt.Errorf("%s of %d bytes does not fit a %d-byte slot: %w",
			k.what, len(payload), k.slot, errs.ErrTooLarge)
	}
	b := make([]byte, k.slot)
	copy(b, k.magic[:])
	binary.BigEndian.PutUint16(b[4:], formatVersion)
	binary.BigEndian.PutUint64(b[8:], seq)
	binary.BigEndian.PutUint32(b[16:], uint32(len(payload)))
	copy(b[slotHeadLen:], payload)
	end := slotHeadLen + len(payload)
	binary.BigEndian.PutUint32(b[end:], crc32.Checksum(b[:end], castagnoli))
	return b, nil
}

type slotState int

const (
	slotValid  slotState = iota
	slotEmpty            // all zero bytes: never written
	slotBad              // damaged or torn
	slotFuture           // a valid checksum, of a version newer than ours
)

// slot is one decoded slot.
type slot struct {
	st      slotState
	version uint16
	seq     uint64
	payload []byte
	padding bool // a valid slot whose zero padding is damaged
}

// decodeSlot checks slot index of an object. The checksum is checked
// before the version, so that a damaged version field makes a damaged
// slot, not an object of another version.
func decodeSlot(k kind, b []byte, index int) slot {
	if isZero(b) {
		return slot{st: slotEmpty}
	}
	if !bytes.Equal(b[:4], k.magic[:]) {
		return slot{st: slotBad}
	}
	n := int(binary.BigEndian.Uint32(b[16:]))
	if n > len(b)-slotHeadLen-slotCRCLen || binary.BigEndian.Uint16(b[6:]) != 0 {
		return slot{st: slotBad}
	}
	end := slotHeadLen + n
	if crc32.Checksum(b[:end], castagnoli) != binary.BigEndian.Uint32(b[end:]) {
		return slot{st: slotBad}
	}
	s := slot{
		st:      slotValid,
		version: binary.BigEndian.Uint16(b[4:]),
		seq:     binary.BigEndian.Uint64(b[8:]),
		payload: b[slotHeadLen:end],
		padding: !isZero(b[end+slotCRCLen:]),
	}
	switch {
	case s.version == 0 || s.version > formatVersion:
		s.st = slotFuture
	case s.version == 1 && int(s.seq%2) != index:
		s.st = slotBad
	}
	return s
}

// errUncommitted reports a dual-slot object whose first write never
// completed (see decodeObject). Such an object was never acknowledged.
var errUncommitted = fmt.Errorf("uncommitted object: %w", errs.ErrNotFound)

// object is a decoded dual-slot object: the newest state and what each
// slot holds.
type object struct {
	seq     uint64
	payload []byte
	// stale: the slots (bit i: slot i) that do not hold this state
	// (damaged, torn, empty or older). An update writes them first.
	stale uint8
	// fix: the slots to rewrite for the object to hold the state in both
	// slots in today's version: stale ones, version 1 ones, damaged
	// padding.
	fix uint8
	// damage says why for every slot of fix that is damaged, torn or
	// missing (nothing for slots of version 1 or older states that a
	// version 1 update left).
	damage [2]string
}

// decodeObject picks the newest state of a dual-slot object read into b
// (2*k.slot bytes; bytes past the object's end must be zero).
//
// An object of which no slot is valid is uncommitted (errUncommitted, an
// ErrNotFound) if its creation can have been torn: version 2 creates an
// object by writing slot 1 and then slot 0, so slot 0 empty; version 1
// wrote slot 0 first, so slot 1 empty and slot 0 a torn version 1 slot.
// Anything else with no valid slot is ErrCorrupt; a slot of a newer version
// is ErrVersion.
func decodeObject(k kind, b []byte) (object, error) {
	var s [2]slot
	for i := range 2 {
		s[i] = decodeSlot(k, b[i*k.slot:(i+1)*k.slot], i)
	}
	for i := range 2 {
		if s[i].st == slotFuture {
			return object{}, fmt.Errorf("%s copy %d of format version %d, want at most %d: %w",
				k.what, i, s[i].version, formatVersion, errs.ErrVersion)
		}
	}
	var o object
	switch {
	case s[0].st == slotValid && s[1].st == slotValid:
		switch {
		case s[0].seq > s[1].seq:
			o.seq, o.payload, o.stale = s[0].seq, s[0].payload, 2
		case s[1].seq > s[0].seq:
			o.seq, o.payload, o.stale = s[1].seq, s[1].payload, 1
		case bytes.Equal(s[0].payload, s[1].payload):
			o.seq, o.payload = s[0].seq, s[0].payload
		default:
			return object{}, fmt.Errorf("%s: two copies of sequence number %d differ: %w",
				k.what, s[0].seq, errs.ErrCorrupt)
		}
		if i := o.stale >> 1; o.stale != 0 && s[i].version != 1 {
			o.damage[i] = fmt.Sprintf("holds sequence number %d, not %d (an update interrupted)", s[i].seq, o.seq)
		}
	case s[0].st == slotValid || s[1].st == slotValid:
		i := 0
		if s[1].st == slotValid {
			i = 1
		}
		o.seq, o.payload, o.stale = s[i].seq, s[i].payload, uint8(1)<<(1-i)
		switch {
		case s[1-i].st == slotBad:
			o.damage[1-i] = "damaged or torn"
			if s[i].version == 1 {
				o.damage[1-i] += " (version 1: it may have held a newer state)"
			}
		case s[i].version != 1: // empty
			o.damage[1-i] = "missing (all zero)"
		}
	default:
		if v := unverifiedVersion(k, b); v > formatVersion {
			return object{}, fmt.Errorf("%s of format version %d, want at most %d: %w",
				k.what, v, formatVersion, errs.ErrVersion)
		}
		if s[0].st == slotEmpty || (s[1].st == slotEmpty && isVersion1(k, b)) {
			return object{}, errUncommitted
		}
		return object{}, fmt.Errorf("%s: no valid copy (%s, %s): %w",
			k.what, s[0].st, s[1].st, errs.ErrCorrupt)
	}
	o.fix = o.stale
	for i := range 2 {
		if o.stale&(1<<i) == 0 && (s[i].version == 1 || s[i].padding) {
			o.fix |= 1 << i
			if s[i].padding {
				o.damage[i] = "damaged (after its checksum)"
			}
		}
	}
	return o, nil
}

func (st slotState) String() string {
	switch st {
	case slotValid:
		return "valid"
	case slotEmpty:
		return "all zero"
	case slotBad:
		return "damaged"
	}
	return "of another version"
}

// unverifiedVersion returns the highest version field of a slot with the
// right magic, checksum or not (a newer version may lay out its slots
// otherwise).
func unverifiedVersion(k kind, b []byte) uint16 {
	var v uint16
	for i := range 2 {
		s := b[i*k.slot:]
		if bytes.Equal(s[:4], k.magic[:]) {
			v = max(v, binary.BigEndian.Uint16(s[4:]))
		}
	}
	return v
}

// isVersion1 tells whether slot 0 starts as a version 1 slot does.
func isVersion1(k kind, b []byte) bool {
	return bytes.Equal(b[:4], k.magic[:]) && binary.BigEndian.Uint16(b[4:]) == 1
}

// zeros is compared with, by isZero.
var zeros [4096]byte

func isZero(b []byte) bool {
	for len(b) > 0 {
		n := min(len(b), len(zeros))
		if !bytes.Equal(b[:n], zeros[:n]) {
			return false
		}
		b = b[n:]
	}
	return true
}

// ref names a map page or data object together with its position: the
// object is <prefixes[prefix]>_<epoch>_<position>.
type ref struct {
	prefix uint32 // index into the header's prefix table
	epoch  uint64
}

// entry is one 16-byte slot of a map page: a child page (inner levels) or
// a data object (leaves). The zero entry means "all zeros".
//
//	flags    uint16  bit 0: present
//	reserved uint16  0
//	prefix   uint32
//	epoch    uint64
type entry struct {
	present bool
	ref
}

const (
	entrySize      = 16
	entryPresent   = 1
	fanoutBits     = 8
	fanout         = 1 << fanoutBits
	pagePayloadLen = 16 + fanout*entrySize
)

func putEntry(b []byte, e entry) {
	clear(b[:entrySize])
	if !e.present {
		return
	}
	binary.BigEndian.PutUint16(b, entryPresent)
	binary.BigEndian.PutUint32(b[4:], e.prefix)
	binary.BigEndian.PutUint64(b[8:], e.epoch)
}

func getEntry(b []byte) (entry, error) {
	flags := binary.BigEndian.Uint16(b)
	switch {
	case flags == 0 && isZero(b[:entrySize]):
		return entry{}, nil
	case flags != entryPresent || binary.BigEndian.Uint16(b[2:]) != 0:
		return entry{}, fmt.Errorf("bad map entry flags %#x: %w", flags, errs.ErrCorrupt)
	}
	return entry{present: true, ref: ref{
		prefix: binary.BigEndian.Uint32(b[4:]),
		epoch:  binary.BigEndian.Uint64(b[8:]),
	}}, nil
}

// pageKey is the position of a map page in the radix tree: level 0 pages
// are leaves; the page at (level, index) covers blocks
// [index<<(8*(level+1)), (index+1)<<(8*(level+1))).
type pageKey struct {
	level uint8
	index uint64
}

// page is one map page in memory. Cached pages are never modified: a
// change clones the page.
//
// Payload: level uint8, reserved [7]byte, index uint64, entries [256]entry.
type page struct {
	pageKey
	ref ref    // the object holding it
	seq uint64 // sequence number of its newest state
	// stale and fix as read (see object); zero once written.
	stale, fix uint8
	e          [fanout]entry
}

func (p *page) clone() *page {
	c := *p
	return &c
}

func encodePage(p *page) []byte {
	b := make([]byte, pagePayloadLen)
	b[0] = p.level
	binary.BigEndian.PutUint64(b[8:], p.index)
	for i, e := range p.e {
		putEntry(b[16+i*entrySize:], e)
	}
	return b
}

func decodePage(b []byte, key pageKey) (*page, error) {
	if len(b) != pagePayloadLen || !isZero(b[1:8]) {
		return nil, fmt.Errorf("map page of %d bytes: %w", len(b), errs.ErrCorrupt)
	}
	p := &page{pageKey: pageKey{level: b[0], index: binary.BigEndian.Uint64(b[8:])}}
	if p.pageKey != key {
		return nil, fmt.Errorf("map page at level %d index %d found where level %d index %d belongs: %w",
			p.level, p.index, key.level, key.index, errs.ErrCorrupt)
	}
	for i := range p.e {
		e, err := getEntry(b[16+i*entrySize:])
		if err != nil {
			return nil, err
		}
		p.e[i] = e
	}
	return p, nil
}

// Header flags.
const (
	flagSnapshot = 1 << iota // read-only volume
	flagPending              // renamed from link; visible only once link is gone
	flagRenaming             // a rename to link was started
	knownFlags   = flagSnapshot | flagPending | flagRenaming
)

// span is a range of epochs of one prefix whose objects belong to the
// volume alone (written in place). The last span is the allocation epoch:
// new objects are named <prefix>_<to>_<index>.
type span struct {
	prefix   uint32
	from, to uint64
}

// maxSpans bounds the spans of a header; renames add one each.
const maxSpans = 8

// header is a volume's header object.
//
// Payload:
//
//	id         [16]byte  random, kept across renames
//	flags      uint32
//	size       uint64    bytes
//	blockSize  uint32
//	root       entry     root page of the tree (16 bytes), at level height-1
//	nspans     uint16, then per span: prefix uint32, from uint64, to uint64
//	link       uint16 length + bytes (flagPending / flagRenaming)
//	parent     uint16 length + bytes (informational)
//	nprefixes  uint16, then per prefix: uint16 length + bytes
type header struct {
	seq       uint64
	stale     uint8 // as read (see object); zero once written
	fix       uint8
	id        [16]byte
	flags     uint32
	size      uint64
	blockSize uint32
	root      entry
	spans     []span
	link      string
	parent    string
	prefixes  []string
}

func (h *header) snapshot() bool { return h.flags&flagSnapshot != 0 }

// nblocks is the number of blocks covering the volume.
func (h *header) nblocks() uint64 { return (h.size + uint64(h.blockSize) - 1) / uint64(h.blockSize) }

// height is the number of tree levels for the volume's size.
func (h *header) height() uint8 { return heightFor(h.nblocks()) }

func heightFor(nblocks uint64) uint8 {
	h := uint8(1)
	for h < 7 && uint64(1)<<(fanoutBits*uint(h)) < nblocks {
		h++
	}
	return h
}

// alloc is the identity new objects are named with.
func (h *header) alloc() ref {
	s := h.spans[len(h.spans)-1]
	return ref{prefix: s.prefix, epoch: s.to}
}

// owned tells whether the object r belongs to this volume alone, so that
// it may be written in place.
func (h *header) owned(r ref) bool {
	if h.snapshot() {
		return false
	}
	for _, s := range h.spans {
		if r.prefix == s.prefix && s.from <= r.epoch && r.epoch <= s.to {
			return true
		}
	}
	return false
}

// prefixIndex returns the index of prefix p, adding it if needed.
func (h *header) prefixIndex(p string) uint32 {
	for i, q := range h.prefixes {
		if q == p {
			return uint32(i)
		}
	}
	h.prefixes = append(h.prefixes, p)
	return uint32(len(h.prefixes) - 1)
}

func (h *header) clone() *header {
	c := *h
	c.spans = append([]span(nil), h.spans...)
	c.prefixes = append([]string(nil), h.prefixes...)
	return &c
}

func encodeHeader(h *header) []byte {
	var b []byte
	b = append(b, h.id[:]...)
	b = binary.BigEndian.AppendUint32(b, h.flags)
	b = binary.BigEndian.AppendUint64(b, h.size)
	b = binary.BigEndian.AppendUint32(b, h.blockSize)
	var e [entrySize]byte
	putEntry(e[:], h.root)
	b = append(b, e[:]...)
	b = binary.BigEndian.AppendUint16(b, uint16(len(h.spans)))
	for _, s := range h.spans {
		b = binary.BigEndian.AppendUint32(b, s.prefix)
		b = binary.BigEndian.AppendUint64(b, s.from)
		b = binary.BigEndian.AppendUint64(b, s.to)
	}
	appendString := func(s string) {
		b = binary.BigEndian.AppendUint16(b, uint16(len(s)))
		b = append(b, s...)
	}
	appendString(h.link)
	appendString(h.parent)
	b = binary.BigEndian.AppendUint16(b, uint16(len(h.prefixes)))
	for _, p := range h.prefixes {
		appendString(p)
	}
	return b
}

// decoder reads big-endian fields and remembers the first short read.
type decoder struct {
	b   []byte
	bad bool
}

func (d *decoder) take(n int) []byte {
	if d.bad || len(d.b) < n {
		d.bad = true
		return make([]byte, n)
	}
	v := d.b[:n]
	d.b = d.b[n:]
	return v
}

func (d *decoder) u16() uint16 { return binary.BigEndian.Uint16(d.take(2)) }
func (d *decoder) u32() uint32 { return binary.BigEndian.Uint32(d.take(4)) }
func (d *decoder) u64() uint64 { return binary.BigEndian.Uint64(d.take(8)) }
func (d *decoder) str() string { return string(d.take(int(d.u16()))) }
func corruptHeader(why string) error {
	return fmt.Errorf("volume header: %s: %w", why, errs.ErrCorrupt)
}

func decodeHeader(b []byte) (*header, error) {
	d := &decoder{b: b}
	h := &header{}
	copy(h.id[:], d.take(16))
	h.flags = d.u32()
	h.size = d.u64()
	h.blockSize = d.u32()
	root, err := getEntry(d.take(entrySize))
	if err != nil {
		return nil, err
	}
	h.root = root
	for range d.u16() {
		h.spans = append(h.spans, span{prefix: d.u32(), from: d.u64(), to: d.u64()})
	}
	h.link = d.str()
	h.parent = d.str()
	for range d.u16() {
		h.prefixes = append(h.prefixes, d.str())
	}
	switch {
	case d.bad || len(d.b) != 0:
		return nil, corruptHeader("bad length")
	case h.flags&^knownFlags != 0:
		return nil, corruptHeader(fmt.Sprintf("unknown flags %#x", h.flags))
	case h.blockSize < MinBlockSize || h.blockSize > MaxBlockSize || bits.OnesCount32(h.blockSize) != 1:
		return nil, corruptHeader(fmt.Sprintf("block size %d", h.blockSize))
	case h.size == 0 || h.size > MaxSize:
		return nil, corruptHeader(fmt.Sprintf("size %d", h.size))
	case len(h.spans) == 0 || len(h.spans) > maxSpans:
		return nil, corruptHeader(fmt.Sprintf("%d epoch spans", len(h.spans)))
	case h.root.present && h.root.prefix >= uint32(len(h.prefixes)):
		return nil, corruptHeader("root prefix out of range")
	case (h.flags&(flagPending|flagRenaming) != 0) != (h.link != ""):
		return nil, corruptHeader("rename link without flag")
	}
	for _, s := range h.spans {
		if s.prefix >= uint32(len(h.prefixes)) || s.from > s.to {
			return nil, corruptHeader("bad epoch span")
		}
	}
	return h, nil
}

// Epoch record payload: epoch uint64, the highest epoch ever handed out
// for objects named after the record's volume name.
func encodeEpoch(e uint64) []byte { return binary.BigEndian.AppendUint64(nil, e) }

func decodeEpoch(b []byte) (uint64, error) {
	if len(b) != 8 {
		return 0, fmt.Errorf("epoch record of %d bytes: %w", len(b), errs.ErrCorrupt)
	}
	return binary.BigEndian.Uint64(b), nil
}
