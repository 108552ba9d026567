package loader

import "testing"

// TestTarMembersAsTorchReadsThem opens each archive of testdata/tardiff, torch's oldest
// format (a tar of storages, tensors and pickle) made to probe how CPython's tarfile
// resolves names for torch's legacy_load (repeated names, ./ prefixes, links, GNU and PAX
// long names, bad checksums, zero blocks, concatenated archives, a polyglot that tarfile
// refuses and torch reads as its older stream), and holds the loader to what torch.load
// returned: the tree shows torch's value, or the loader refuses the file (failing closed).
// Where torch raised, the loader shows no value that torch would have read.
func TestTarMembersAsTorchReadsThem(t *testing.T) {
	checkTorchTruthTable(t, "testdata/tardiff", "torch.load refuses this tar archive: ", "torch-legacy-tar")
}
