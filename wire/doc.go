// Package wire holds the typed payloads that travel in a request's data
// buffer for the operations that need more than a target, an offset and a
// size: map replies, clone and snapshot parameters, lock owners, volume
// information and so on. Each type has a versioned binary encoding.
//
// Every type implements [Payload]:
//
//	var c wire.Clone
//	n, err := (&wire.Clone{Parent: "img-debian", Owner: id}).MarshalTo(buf)
//	err = c.Unmarshal(buf) // errors.Is(err, errs.ErrInvalid), errs.ErrVersion
//
// # Header
//
// Every payload starts with a 4-byte header:
//
//	| offset | size | value                                   |
//	|--------|------|-----------------------------------------|
//	| 0      | 1    | magic, 0xA7                             |
//	| 1      | 1    | kind (see below)                        |
//	| 2      | 1    | layout version of that kind, 1 for now  |
//	| 3      | 1    | reserved, must be 0                     |
//
// The header layout never changes. The version is per kind: a kind whose
// body changes gets a new version, and a reader that does not know it
// fails with errs.ErrVersion rather than guessing.
//
// # Body
//
// The body follows the header. Integers are big-endian and unsigned (u8,
// u32, u64); a bool is one byte, 0 or 1. A string (str) is a u16 length
// and that many bytes: object and volume names at most [MaxNameLen] (255)
// bytes, lock owner identities at most [MaxOwnerLen] (1024). A list is a
// u32 count and that many entries.
//
//	| kind | type       | operation              | body                                                           |
//	|------|------------|------------------------|----------------------------------------------------------------|
//	| 1    | MapReply   | MAPR, MAPW reply       | count u32, then per piece: object str, offset u64,             |
//	|      |            |                        | size u64, flags u32 (PieceReadOnly=1, PieceZero=2)             |
//	| 2    | Clone      | CLONE request          | parent str, size u64, owner str                                |
//	| 3    | Snapshot   | SNAPSHOT request       | name str, owner str                                            |
//	| 4    | Rename     | RENAME request         | new name str, owner str                                        |
//	| 5    | Copy       | COPY request           | source str                                                     |
//	| 6    | Hash       | HASH reply             | hash str (64 lowercase hex), size u64                          |
//	| 7    | ObjectInfo | INFO reply (blocker)   | size u64                                                       |
//	| 8    | VolumeInfo | INFO reply (mapper)    | size u64, block size u32, flags u32 (VolReadOnly=1,            |
//	|      |            |                        | VolSnapshot=2), epoch u64, parent str, lock owner str          |
//	| 9    | Lock       | ACQUIRE, RELEASE       | owner str                                                      |
//	| 10   | LockReply  | ACQUIRE failure reply  | owner str                                                      |
//	| 11   | Resize     | TRUNCATE (mapper)      | size u64, force bool, owner str                                |
//	| 12   | (retired)  | was Create, a CREATE request no peer served; refused (ErrInvalid), never reused |
//	| 13   | List       | LIST request           | prefix str, after str |
//	| 14   | Names      | LIST reply             | count u32, then per name: name str; more u8 |
//	| 15   | Extents    | ALLOCATED reply        | count u32, then per extent: offset u64, size u64 |
//	| 16   | ErrorText  | any failed reply but READ/WRITE | message str (at most 1024 bytes) |
//	| 17   | Session    | OPEN, CLOSE of a session, OPEN reply | handle u64, flags u32 (SessionWrite=1, SessionGone=2), id str |
//
// For example, Clone{Parent: "snap01", Size: 4096, Owner: "h_1"} is
//
//	a7 02 01 00  00 06 73 6e 61 70 30 31  00 00 00 00 00 00 10 00  00 03 68 5f 31
//
// # Validation
//
// Encoding and decoding apply the same checks, so whatever MarshalTo
// writes Unmarshal reads back, and whatever Unmarshal accepts re-encodes to
// the same bytes:
//
//   - strings and lists within their limits (encoding: errs.ErrTooLarge);
//   - no unknown flag bits; a bool is 0 or 1;
//   - a map piece has an object if and only if it is not PieceZero, and
//     its offset plus size does not overflow;
//   - a hash is exactly 64 lowercase hex digits.
//
// Names are otherwise not checked (length minimums, reserved forms): that
// is the business of the peer that serves the request.
//
// Decoding fails, wrapping errs.ErrInvalid, on a buffer too short for the
// header or for what the fields announce, a bad magic, a non-zero reserved
// byte, an unknown or retired kind or a kind other than the one asked for, and any
// failed check above; it fails with errs.ErrVersion on a version it does
// not know. A list count is checked against the bytes left in the buffer
// before anything is allocated for it, and no input makes it panic.
// Decoded values never alias the buffer, which usually lives in the shared
// segment and is reused. An empty list decodes as nil.
//
// # Padding
//
// A request's data buffer is often larger than its payload. Decoding
// accepts bytes after the payload only if they are all zero; anything else
// is ErrInvalid, so that a stale or overlong buffer is caught rather than
// half-read. MarshalTo writes only the first EncodedSize() bytes: a sender
// either sends exactly that many (the request's size) or clears the rest of
// a reused buffer, e.g. clear(buf[n:]).
package wire
