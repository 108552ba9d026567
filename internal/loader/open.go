package loader

import "io"

func open(r io.ReaderAt, size int64, o Options) (*Checkpoint, error) {
	return nil, &Error{Msg: "not implemented yet", Offset: -1}
}
