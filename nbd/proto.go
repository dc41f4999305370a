package nbd

import (
	"context"
	"errors"

	"github.com/archipelago-go/archipelago/errs"
)

// Wire constants of the NBD protocol (doc/proto.md of the reference
// implementation). Every integer on the wire is big-endian.

// Magic numbers.
const (
	nbdMagic        = 0x4e42444d41474943 // "NBDMAGIC"
	optMagic        = 0x49484156454f5054 // "IHAVEOPT"
	repMagic        = 0x0003e889045565a9 // option reply
	requestMagic    = 0x25609513
	simpleMagic     = 0x67446698
	structuredMagic = 0x668e33ef
)

// Handshake flags (server) and client flags.
const (
	flagFixedNewstyle = 1 << 0
	flagNoZeroes      = 1 << 1

	clientFixedNewstyle = 1 << 0
	clientNoZeroes      = 1 << 1
)

// Transmission flags.
const (
	flagHasFlags        = 1 << 0
	flagReadOnly        = 1 << 1
	flagSendFlush       = 1 << 2
	flagSendFUA         = 1 << 3
	flagSendTrim        = 1 << 5
	flagSendWriteZeroes = 1 << 6
	flagSendDF          = 1 << 7
	flagCanMultiConn    = 1 << 8
)

// Options.
const (
	optExportName      = 1
	optAbort           = 2
	optList            = 3
	optStartTLS        = 5
	optInfo            = 6
	optGo              = 7
	optStructuredReply = 8
	optListMetaContext = 9
	optSetMetaContext  = 10
)

// Option replies.
const (
	repAck         = 1
	repServer      = 2
	repInfo        = 3
	repMetaContext = 4

	repErrUnsup    = 1<<31 + 1
	repErrPolicy   = 1<<31 + 2
	repErrInvalid  = 1<<31 + 3
	repErrTLSReqd  = 1<<31 + 5
	repErrUnknown  = 1<<31 + 6
	repErrShutdown = 1<<31 + 7
	repErrTooBig   = 1<<31 + 9
)

// Information types of NBD_OPT_INFO and NBD_OPT_GO.
const (
	infoExport      = 0
	infoName        = 1
	infoDescription = 2
	infoBlockSize   = 3
)

// Commands.
const (
	cmdRead        = 0
	cmdWrite       = 1
	cmdDisc        = 2
	cmdFlush       = 3
	cmdTrim        = 4
	cmdCache       = 5
	cmdWriteZeroes = 6
	cmdBlockStatus = 7
)

// Command flags.
const (
	cmdFlagFUA      = 1 << 0
	cmdFlagNoHole   = 1 << 1
	cmdFlagDF       = 1 << 2
	cmdFlagReqOne   = 1 << 3
	cmdFlagFastZero = 1 << 4
)

// Structured replies.
const (
	replyFlagDone = 1 << 0

	replyNone        = 0
	replyOffsetData  = 1
	replyOffsetHole  = 2
	replyBlockStatus = 5
	replyError       = 1<<15 + 1
)

// base:allocation.
const (
	stateHole = 1 << 0
	stateZero = 1 << 1

	metaBaseAllocation = "base:allocation"
	metaIDAllocation   = 1 // the context id we hand out for base:allocation
)

// Error values of the transmission phase.
const (
	eperm     = 1
	eio       = 5
	einval    = 22
	enospc    = 28
	eoverflow = 75
	eshutdown = 108
)

// Sizes of fixed-length messages.
const (
	requestSize       = 28
	simpleReplySize   = 16
	structuredHdrSize = 20
)

// Limits.
const (
	// DefaultMaxPayload is the largest READ or WRITE payload accepted
	// unless an export advertises less (2^25, as the protocol suggests).
	DefaultMaxPayload = 32 << 20
	// maxOptionLen bounds the data of one option during the handshake;
	// longer options are skipped and refused with NBD_REP_ERR_TOO_BIG.
	maxOptionLen = 64 << 10
	// maxString is the protocol's limit for names and messages.
	maxString = 4096
	// maxExtents bounds the descriptors of one block status reply.
	maxExtents = 1 << 20
)

// errno maps a backend error to an NBD error value. ErrReadOnly, ErrLocked
// and ErrNotOwner are EPERM; ErrInvalid and ErrNotSupported are EINVAL;
// ErrNoSpace and ErrTooLarge are ENOSPC; ErrShutdown and a cancelled
// context are ESHUTDOWN; everything else (ErrNotFound, ErrIO, ErrCorrupt,
// a dead peer...) is EIO.
func errno(err error) uint32 {
	switch {
	case err == nil:
		return 0
	case errors.Is(err, errs.ErrReadOnly), errors.Is(err, errs.ErrLocked), errors.Is(err, errs.ErrNotOwner):
		return eperm
	case errors.Is(err, errs.ErrInvalid), errors.Is(err, errs.ErrNotSupported):
		return einval
	case errors.Is(err, errs.ErrNoSpace), errors.Is(err, errs.ErrTooLarge):
		return enospc
	case errors.Is(err, errs.ErrShutdown), errors.Is(err, context.Canceled):
		return eshutdown
	default:
		return eio
	}
}

// repErr maps an error from Backend.Open to an option error reply.
func repErr(err error) uint32 {
	switch {
	case errors.Is(err, errs.ErrNotFound):
		return repErrUnknown
	case errors.Is(err, errs.ErrInvalid):
		return repErrInvalid
	case errors.Is(err, errs.ErrShutdown), errors.Is(err, context.Canceled):
		return repErrShutdown
	case errors.Is(err, errs.ErrBusy), errors.Is(err, errs.ErrLocked), errors.Is(err, errs.ErrReadOnly):
		return repErrPolicy
	default:
		return repErrUnknown
	}
}
