//go:build unix

package store

import (
	"io"
	"os"
	"syscall"
)

// lockDir takes an exclusive lock on dir, held until the returned Closer is closed or the
// process exits (the kernel drops a dead process's flock locks).
func lockDir(dir string) (io.Closer, error) {
	return flockDir(dir, syscall.LOCK_EX)
}

// tryLockDir is lockDir without waiting: it fails if another Store holds the lock.
func tryLockDir(dir string) (io.Closer, error) {
	return flockDir(dir, syscall.LOCK_EX|syscall.LOCK_NB)
}

func flockDir(dir string, how int) (io.Closer, error) {
	f, err := os.Open(dir)
	if err != nil {
		return nil, err
	}
	if err := syscall.Flock(int(f.Fd()), how); err != nil {
		f.Close()
		return nil, err
	}
	return f, nil
}
