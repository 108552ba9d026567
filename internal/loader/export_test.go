package loader

// RowsNever is the options that make every entry of a state dict a node at open (no rows,
// lazytensors.go): the reference external tests hold rows to.
func RowsNever() Options { return Options{noRows: true} }

// KeptRows says whether a dict under n keeps its tensors as rows.
var KeptRows = keptRows
