package volclient_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"testing"

	"github.com/archipelago-go/archipelago/errs"
	"github.com/archipelago-go/archipelago/internal/stacktest"
	"github.com/archipelago-go/archipelago/volclient"
)

// The installation the examples manage: the name of its segment and the
// port of its vlmcd, as its configuration file sets them. The examples
// need running peers, so `go test` does not run them by themselves:
// TestExamples runs each against a throwaway stack and checks what it
// prints.
var segment, vlmcdPort = "archipelago", 4

// A volume's life: create it, snapshot it, clone the snapshot, look at
// the clone, list, remove.
func Example() {
	ctx := context.Background()
	c, err := volclient.Dial(segment, vlmcdPort)
	if err != nil {
		fmt.Println(err)
		return
	}
	defer c.Disconnect()

	if err := c.Create(ctx, "vm-disk", 10<<30); err != nil {
		fmt.Println(err)
		return
	}
	if err := c.Snapshot(ctx, "vm-disk", "vm-disk@base"); err != nil {
		fmt.Println(err)
		return
	}
	// A clone costs the same whatever the size: no data is copied.
	if err := c.Clone(ctx, "vm-disk@base", "vm-disk-2", 0); err != nil {
		fmt.Println(err)
		return
	}
	vi, err := c.Info(ctx, "vm-disk-2")
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Printf("%s: %d GiB, clone of %s\n", vi.Name, vi.Size>>30, vi.Parent)
	names, err := c.List(ctx)
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println(names)
	for _, n := range []string{"vm-disk-2", "vm-disk@base", "vm-disk"} {
		if err := c.Remove(ctx, n); err != nil {
			fmt.Println(err)
		}
	}
}

// Read and write a volume through a session.
func ExampleClient_OpenSession() {
	ctx := context.Background()
	c, err := volclient.Dial(segment, vlmcdPort)
	if err != nil {
		fmt.Println(err)
		return
	}
	defer c.Disconnect()
	if err := c.Create(ctx, "scratch", 1<<30); err != nil {
		fmt.Println(err)
		return
	}
	defer c.Remove(ctx, "scratch")

	v, err := c.OpenSession(ctx, "scratch")
	if err != nil {
		fmt.Println(err)
		return
	}
	defer v.Close(ctx)
	if err := v.WriteAt(ctx, []byte("hello, volume"), 4096, false); err != nil {
		fmt.Println(err)
		return
	}
	if err := v.Flush(ctx); err != nil { // durable from here on
		fmt.Println(err)
		return
	}
	p := make([]byte, 13)
	if err := v.ReadAt(ctx, p, 4096); err != nil {
		fmt.Println(err)
		return
	}
	fmt.Printf("%q\n", p)
	// Only the written block takes space; the rest reads as zeros.
	ext, err := v.Allocated(ctx, 0, v.Size)
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Printf("allocated: %+v of %d blocks of %d bytes\n", ext, v.Size/uint64(v.BlockSize), v.BlockSize)
}

// Errors wrap the errs sentinels: test them with errors.Is.
func ExampleClient_Create() {
	ctx := context.Background()
	c, err := volclient.Dial(segment, vlmcdPort)
	if err != nil {
		fmt.Println(err)
		return
	}
	defer c.Disconnect()
	if err := c.Create(ctx, "db", 1<<30); err != nil {
		fmt.Println(err)
		return
	}
	defer c.Remove(ctx, "db")

	err = c.Create(ctx, "db", 1<<30)
	fmt.Println("taken:", errors.Is(err, errs.ErrExists))
	_, err = c.Info(ctx, "no-such-volume")
	fmt.Println("missing:", errors.Is(err, errs.ErrNotFound))
	err = c.Resize(ctx, "db", 1<<20) // shrinking needs ResizeForce
	fmt.Println("shrink refused:", errors.Is(err, errs.ErrInvalid))
}

// TestExamples runs the examples against a throwaway stack and checks
// what each prints.
func TestExamples(t *testing.T) {
	s := stacktest.Start(t, stacktest.Options{})
	segment, vlmcdPort = s.Seg.Name(), stacktest.Vlmcd
	for _, x := range []struct {
		name string
		fn   func()
		want string
	}{
		{"Example", Example, "vm-disk-2: 10 GiB, clone of vm-disk@base\n[vm-disk vm-disk-2 vm-disk@base]\n"},
		{"ExampleClient_OpenSession", ExampleClient_OpenSession, "\"hello, volume\"\nallocated: [{Offset:0 Size:4194304}] of 256 blocks of 4194304 bytes\n"},
		{"ExampleClient_Create", ExampleClient_Create, "taken: true\nmissing: true\nshrink refused: true\n"},
	} {
		if got := stdoutOf(t, x.fn); got != x.want {
			t.Errorf("%s printed:\n%s\nwant:\n%s", x.name, got, x.want)
		}
	}
	// Each example removed what it made.
	if names, err := s.Volumes().List(t.Context()); err != nil || len(names) != 0 {
		t.Errorf("volumes left by the examples: %q, %v", names, err)
	}
}

// stdoutOf runs fn and returns what it printed on os.Stdout.
func stdoutOf(t *testing.T, fn func()) string {
	t.Helper()
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	out := make(chan string)
	go func() {
		b, _ := io.ReadAll(r)
		out <- string(b)
	}()
	stdout := os.Stdout
	os.Stdout = w
	defer func() { os.Stdout = stdout }()
	fn()
	os.Stdout = stdout
	w.Close()
	return <-out
}
