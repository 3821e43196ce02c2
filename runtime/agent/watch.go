package agent

import (
	"context"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/fsnotify/fsnotify"
)

// watch asks for a Reconcile after every change in OpsDir. The directory
// may not exist yet, or may vanish and come back: the inotify watch then
// sits on the nearest existing ancestor and moves down as directories
// appear, and back up when they disappear.
func (a *Agent) watch(ctx context.Context) {
	w, err := fsnotify.NewWatcher()
	if err != nil {
		a.log.Warn().Err(err).Dur("interval", a.opts.PollInterval).Msg("inotify unavailable; polling the operations directory")
		last := dirSignature(a.opts.OpsDir)
		a.requestReconcile()
		a.poll(ctx, last)
		return
	}
	defer w.Close()
	target := filepath.Clean(a.opts.OpsDir)
	watched := ""
	// rewatch moves the watch to the deepest existing directory on the way
	// to target, repeating until that stops changing (a directory may be
	// created between the look and the Add). It reports whether the watch
	// moved.
	rewatch := func() bool {
		moved := false
		for range 64 {
			p := deepestDir(target)
			if p == watched {
				return moved
			}
			if watched != "" {
				_ = w.Remove(watched) // fails harmlessly if the kernel dropped it
				watched = ""
			}
			if err := w.Add(p); err != nil {
				// p vanished between the look and the Add: look again.
				a.log.Debug().Err(err).Str("dir", p).Msg("cannot watch directory yet")
				continue
			}
			watched, moved = p, true
		}
		return moved
	}
	rewatch()
	if watched == "" {
		a.log.Warn().Str("dir", target).Msg("cannot watch the operations directory; polling it")
		last := dirSignature(target)
		a.requestReconcile()
		a.poll(ctx, last)
		return
	}
	a.requestReconcile()
	debounce := time.NewTimer(time.Hour)
	debounce.Stop()
	defer debounce.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case ev, ok := <-w.Events:
			if !ok {
				return
			}
			if watched != target || ev.Name == target {
				// Watching an ancestor, or the directory itself went: only
				// the shape of the path matters.
				if (rewatch() && watched == target) || ev.Name == target {
					debounce.Reset(a.opts.Debounce)
				}
				if watched == "" {
					a.log.Warn().Str("dir", target).Msg("lost the watch on the operations directory; polling it")
					a.requestReconcile()
					a.poll(ctx, dirSignature(target))
					return
				}
				continue
			}
			debounce.Reset(a.opts.Debounce)
		case err, ok := <-w.Errors:
			if !ok {
				return
			}
			// An overflow loses events: reconcile to be safe.
			a.log.Warn().Err(err).Msg("watch error; reconciling")
			debounce.Reset(a.opts.Debounce)
		case <-debounce.C:
			a.requestReconcile()
		}
	}
}

// deepestDir returns target if it is a directory, or its nearest existing
// ancestor directory.
func deepestDir(target string) string {
	p := target
	for {
		if fi, err := os.Stat(p); err == nil && fi.IsDir() {
			return p
		}
		parent := filepath.Dir(p)
		if parent == p {
			return p
		}
		p = parent
	}
}

// poll is the fallback when inotify is unavailable: it compares a listing
// of OpsDir (names, sizes, modification times) every PollInterval with
// the last one seen.
func (a *Agent) poll(ctx context.Context, last string) {
	t := time.NewTicker(a.opts.PollInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if sig := dirSignature(a.opts.OpsDir); sig != last {
			last = sig
			a.requestReconcile()
		}
	}
}

func dirSignature(dir string) string {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return "!" + err.Error()
	}
	var b strings.Builder
	for _, e := range entries {
		b.WriteString(e.Name())
		if fi, err := e.Info(); err == nil {
			b.WriteString(" " + strconv.FormatInt(fi.Size(), 10) + " " + strconv.FormatInt(fi.ModTime().UnixNano(), 10))
		}
		b.WriteByte('\n')
	}
	return b.String()
}
