// Package gguf reads GGUF files, llama.cpp's model format, without running them.
//
// Parse reads a file's header, metadata and tensor infos and checks them as ggml's own
// reader (ggml/src/gguf.cpp) does; the specification is ggml's docs/gguf.md. Versions 2
// and 3 are read (they differ only in that 3 may be written big-endian). Version 1, whose
// counts are 32-bit, and big-endian files, which gguf.cpp recognises by a version whose low
// 16 bits read as zero, are refused with a message saying so.
//
// Nothing the file says is trusted before the bytes it claims are known to exist: every
// count and length is checked against what remains of the file (and against Options)
// before anything is allocated for it. Metadata arrays are not materialised: an Array
// remembers where its items are and reads a page of them on demand, so a UI can show a
// 150,000-token vocabulary 200 items at a time.
//
// Dims are kept as the file writes them, ne[0] (the fastest-varying dimension) first;
// Shape is the reverse, the numpy order. Dequantize decodes blocks of the common types
// (F32, F16, BF16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0 and the K-quants Q2_K to Q6_K) to float32
// exactly as ggml's reference dequantize_row_* functions do, bit for bit.
//
// MergeSplit puts the parts of a split model (model-00001-of-00003.gguf, ...) back
// together, checking their split.* keys the way llama.cpp's loader does.
package gguf
