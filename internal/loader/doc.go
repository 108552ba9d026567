// Package loader opens pickles and PyTorch checkpoints without running anything in them.
//
// It sniffs the container format, scans every pickle opcode before unpickling, resolves
// globals through an allowlist of pure-Go stand-ins, and turns the result into the model's
// tree (package ckpt) whose tensors are lazy byte ranges of the original file. It only
// parses: gopickle types never leave this package, and what readers do with a tree is
// ckpt's.
package loader
