//go:build !unix

package store

import "io"

// Without flock, temporary directories are not locked: New removes leftovers only by age.
func lockDir(string) (io.Closer, error) { return nopCloser{}, nil }

func tryLockDir(string) (io.Closer, error) { return nil, errLockUnsupported }

type nopCloser struct{}

func (nopCloser) Close() error { return nil }
