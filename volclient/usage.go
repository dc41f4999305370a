package volclient

import (
	"context"

	"github.com/archipelago-go/archipelago/xseg"
)

// UsageOptions shape Client.Usage.
type UsageOptions struct {
	// Held: also list the storage and size every map page and data
	// object it holds, to say what it holds and what no volume or
	// snapshot reaches (garbage that `vlmc gc` frees). Costs a listing
	// of the pool and a stat of every object nothing reaches.
	Held bool
}

// UsageShare is the space of a set of objects (the data objects, or the
// map pages), in objects and bytes (their sizes in the storage): those
// no other volume or snapshot reaches (exclusive) and the others
// (shared). For the pool: exclusive objects are reached by exactly one
// volume or snapshot, shared ones by more (each counted once), so
// Bytes = ExclusiveBytes + SharedBytes.
type UsageShare struct {
	Objects          uint64 `json:"objects"`
	Bytes            uint64 `json:"bytes"`
	ExclusiveObjects uint64 `json:"exclusive_objects"`
	ExclusiveBytes   uint64 `json:"exclusive_bytes"`
	SharedObjects    uint64 `json:"shared_objects"`
	SharedBytes      uint64 `json:"shared_bytes"`
}

// UsageCount is a number of objects and their bytes.
type UsageCount struct {
	Objects uint64 `json:"objects"`
	Bytes   uint64 `json:"bytes"`
}

// VolumeUsage is the space of one volume or snapshot.
type VolumeUsage struct {
	Name     string `json:"name"`
	Snapshot bool   `json:"snapshot"`
	// Parent: the snapshot a clone came from, the volume a snapshot was
	// taken of ("" if none).
	Parent string `json:"parent"`
	// Provisioned is the volume's size in bytes.
	Provisioned uint64 `json:"provisioned"`
	BlockSize   uint32 `json:"block_size"`
	// Data: the data objects the volume's map reaches (Bytes: the bytes
	// mapped); exclusive: those no other volume or snapshot reaches (what
	// removing it frees, after a gc); shared: reached by its parent, its
	// snapshots or their clones too.
	Data UsageShare `json:"data"`
	// Map: the same for the pages of its map (metadata).
	Map UsageShare `json:"map"`
	// Missing: data objects its map names that do not exist (a block
	// mapped for a write whose data never came; it reads as zeros).
	Missing uint64 `json:"missing"`
}

// PoolUsage is the space of the whole pool.
type PoolUsage struct {
	Volumes   int `json:"volumes"`
	Snapshots int `json:"snapshots"`
	// Provisioned: the sum of the volumes' sizes (not the snapshots').
	Provisioned uint64 `json:"provisioned"`
	// Data and Map: every data object and map page some volume or
	// snapshot reaches, each counted once.
	Data    UsageShare `json:"data"`
	Map     UsageShare `json:"map"`
	Missing uint64     `json:"missing"`
	// Held: what the storage holds (UsageOptions.Held), nil if not asked.
	Held *UsageHeld `json:"held,omitempty"`
}

// UsageHeld is what the storage holds, found by listing it.
type UsageHeld struct {
	Data UsageCount `json:"data"` // data objects
	Map  UsageCount `json:"map"`  // map pages
	// Other: headers, epoch records, markers.
	Other UsageCount `json:"other"`
	// UnreachableData and UnreachableMap: data objects and map pages
	// no volume or snapshot reaches (garbage; on a pool in use, also
	// objects written since their maps were read).
	UnreachableData UsageCount `json:"unreachable_data"`
	UnreachableMap  UsageCount `json:"unreachable_map"`
}

// UsageReport is the answer of Client.Usage. Its JSON form is what
// `vlmc du --json` prints.
type UsageReport struct {
	// Volumes: those asked for, in the order asked (all, in name order,
	// if none was named).
	Volumes []VolumeUsage `json:"volumes"`
	Pool    PoolUsage     `json:"pool"`
}

// usageRequest is the request's document (mapper/usage.go reads it).
type usageRequest struct {
	Names []string `json:"names,omitempty"`
	Held  bool     `json:"held"`
}

// Usage reports the exact space of the volumes and snapshots named (all
// of them if names is empty) and of the pool, summed from the sizes of
// the objects their maps reach; no data is read. Exclusive and shared
// bytes are computed over every volume and snapshot of the pool,
// whatever names are given. It costs a walk of every map and a stat of
// every object reached (see volume.Engine.Usage). A name that is no
// volume fails with errs.ErrNotFound naming it.
func (c *Client) Usage(ctx context.Context, names []string, opts UsageOptions) (*UsageReport, error) {
	var rep UsageReport
	if err := c.docCall(ctx, xseg.OpUsage, "", 0, true, usageRequest{Names: names, Held: opts.Held}, &rep); err != nil {
		return nil, err
	}
	return &rep, nil
}
