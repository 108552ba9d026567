package gguf

import (
	"fmt"
	"strings"
)

// Type is a ggml tensor type id as stored in a GGUF tensor info (enum ggml_type in ggml.h).
type Type uint32

// The ggml tensor types. Ids that ggml no longer accepts in GGUF files (4, 5, 31-33, 36-38)
// have no constant; Parse refuses them with the name they used to have.
const (
	TypeF32     Type = 0
	TypeF16     Type = 1
	TypeQ4_0    Type = 2
	TypeQ4_1    Type = 3
	TypeQ5_0    Type = 6
	TypeQ5_1    Type = 7
	TypeQ8_0    Type = 8
	TypeQ8_1    Type = 9
	TypeQ2_K    Type = 10
	TypeQ3_K    Type = 11
	TypeQ4_K    Type = 12
	TypeQ5_K    Type = 13
	TypeQ6_K    Type = 14
	TypeQ8_K    Type = 15
	TypeIQ2_XXS Type = 16
	TypeIQ2_XS  Type = 17
	TypeIQ3_XXS Type = 18
	TypeIQ1_S   Type = 19
	TypeIQ4_NL  Type = 20
	TypeIQ3_S   Type = 21
	TypeIQ2_S   Type = 22
	TypeIQ4_XS  Type = 23
	TypeI8      Type = 24
	TypeI16     Type = 25
	TypeI32     Type = 26
	TypeI64     Type = 27
	TypeF64     Type = 28
	TypeIQ1_M   Type = 29
	TypeBF16    Type = 30
	TypeTQ1_0   Type = 34
	TypeTQ2_0   Type = 35
	TypeMXFP4   Type = 39
	TypeNVFP4   Type = 40
	TypeQ1_0    Type = 41
	TypeQ2_0    Type = 42

	// TypeCount is one past the largest id ggml defines (GGML_TYPE_COUNT).
	TypeCount Type = 43
)

// TypeInfo describes one ggml tensor type: a block of BlockSize elements is stored in
// TypeSize bytes (ggml.c type_traits: blck_size and type_size).
type TypeInfo struct {
	Type      Type
	Name      string // as gguf-py and llama.cpp's tools spell it: "Q4_K", "BF16"
	BlockSize int    // elements per block; 0 for a removed id
	TypeSize  int    // bytes per block; 0 for a removed id
	Removed   bool   // the id was used once and ggml refuses it in GGUF files now
}

// qkK is the K-quant super-block size (QK_K in ggml-common.h).
const qkK = 256

// typeTable is indexed by Type. Sizes are those of the block structs in ggml-common.h.
var typeTable = [TypeCount]TypeInfo{
	TypeF32:     {TypeF32, "F32", 1, 4, false},
	TypeF16:     {TypeF16, "F16", 1, 2, false},
	TypeQ4_0:    {TypeQ4_0, "Q4_0", 32, 2 + 16, false},
	TypeQ4_1:    {TypeQ4_1, "Q4_1", 32, 2*2 + 16, false},
	4:           {4, "Q4_2", 0, 0, true},
	5:           {5, "Q4_3", 0, 0, true},
	TypeQ5_0:    {TypeQ5_0, "Q5_0", 32, 2 + 4 + 16, false},
	TypeQ5_1:    {TypeQ5_1, "Q5_1", 32, 2*2 + 4 + 16, false},
	TypeQ8_0:    {TypeQ8_0, "Q8_0", 32, 2 + 32, false},
	TypeQ8_1:    {TypeQ8_1, "Q8_1", 32, 2*2 + 32, false},
	TypeQ2_K:    {TypeQ2_K, "Q2_K", qkK, 2*2 + qkK/16 + qkK/4, false},
	TypeQ3_K:    {TypeQ3_K, "Q3_K", qkK, 2 + qkK/4 + qkK/8 + 12, false},
	TypeQ4_K:    {TypeQ4_K, "Q4_K", qkK, 2*2 + 12 + qkK/2, false},
	TypeQ5_K:    {TypeQ5_K, "Q5_K", qkK, 2*2 + 12 + qkK/2 + qkK/8, false},
	TypeQ6_K:    {TypeQ6_K, "Q6_K", qkK, 2 + qkK/16 + 3*qkK/4, false},
	TypeQ8_K:    {TypeQ8_K, "Q8_K", qkK, 4 + qkK + qkK/16*2, false},
	TypeIQ2_XXS: {TypeIQ2_XXS, "IQ2_XXS", qkK, 2 + qkK/8*2, false},
	TypeIQ2_XS:  {TypeIQ2_XS, "IQ2_XS", qkK, 2 + qkK/8*2 + qkK/32, false},
	TypeIQ3_XXS: {TypeIQ3_XXS, "IQ3_XXS", qkK, 2 + 3*(qkK/8), false},
	TypeIQ1_S:   {TypeIQ1_S, "IQ1_S", qkK, 2 + qkK/8 + qkK/16, false},
	TypeIQ4_NL:  {TypeIQ4_NL, "IQ4_NL", 32, 2 + 16, false},
	TypeIQ3_S:   {TypeIQ3_S, "IQ3_S", qkK, 2 + 13*(qkK/32) + qkK/64, false},
	TypeIQ2_S:   {TypeIQ2_S, "IQ2_S", qkK, 2 + qkK/4 + qkK/16, false},
	TypeIQ4_XS:  {TypeIQ4_XS, "IQ4_XS", qkK, 2 + 2 + qkK/64 + qkK/2, false},
	TypeI8:      {TypeI8, "I8", 1, 1, false},
	TypeI16:     {TypeI16, "I16", 1, 2, false},
	TypeI32:     {TypeI32, "I32", 1, 4, false},
	TypeI64:     {TypeI64, "I64", 1, 8, false},
	TypeF64:     {TypeF64, "F64", 1, 8, false},
	TypeIQ1_M:   {TypeIQ1_M, "IQ1_M", qkK, qkK/8 + qkK/16 + qkK/32, false},
	TypeBF16:    {TypeBF16, "BF16", 1, 2, false},
	31:          {31, "Q4_0_4_4", 0, 0, true},
	32:          {32, "Q4_0_4_8", 0, 0, true},
	33:          {33, "Q4_0_8_8", 0, 0, true},
	TypeTQ1_0:   {TypeTQ1_0, "TQ1_0", qkK, 2 + qkK/64 + (qkK-4*qkK/64)/5, false},
	TypeTQ2_0:   {TypeTQ2_0, "TQ2_0", qkK, 2 + qkK/4, false},
	36:          {36, "IQ4_NL_4_4", 0, 0, true},
	37:          {37, "IQ4_NL_4_8", 0, 0, true},
	38:          {38, "IQ4_NL_8_8", 0, 0, true},
	TypeMXFP4:   {TypeMXFP4, "MXFP4", 32, 1 + 16, false},
	TypeNVFP4:   {TypeNVFP4, "NVFP4", 64, 4 + 32, false},
	TypeQ1_0:    {TypeQ1_0, "Q1_0", 128, 2 + 128/8, false},
	TypeQ2_0:    {TypeQ2_0, "Q2_0", 64, 2 + 64/4, false},
}

// Types returns every ggml type id below TypeCount, removed ones included, in id order.
func Types() []TypeInfo {
	out := make([]TypeInfo, len(typeTable))
	copy(out, typeTable[:])
	return out
}

// LookupType returns the description of t; ok is false for an id ggml never defined (ids of
// removed types are found, with Removed set).
func LookupType(t Type) (info TypeInfo, ok bool) {
	if t >= TypeCount {
		return TypeInfo{}, false
	}
	return typeTable[t], true
}

// TypeByName returns the type named name ("Q4_K"; case-insensitive, so ggml's own "q4_K"
// works too). Removed types are not found.
func TypeByName(name string) (Type, bool) {
	for _, ti := range typeTable {
		if !ti.Removed && strings.EqualFold(ti.Name, name) {
			return ti.Type, true
		}
	}
	return 0, false
}

// String returns the type's name, "Q4_2 (removed)" for a removed id, and "type 99" for an
// id ggml does not define.
func (t Type) String() string {
	info, ok := LookupType(t)
	switch {
	case !ok:
		return fmt.Sprintf("type %d", uint32(t))
	case info.Removed:
		return info.Name + " (removed)"
	}
	return info.Name
}

// BlockSize returns the number of elements in one block of t (1 for plain types, 32 for
// Q4_0, 256 for the K-quants), or 0 if t is unknown or removed.
func BlockSize(t Type) int {
	info, _ := LookupType(t)
	return info.BlockSize
}

// TypeSize returns the number of bytes of one block of t, or 0 if t is unknown or removed.
func TypeSize(t Type) int {
	info, _ := LookupType(t)
	return info.TypeSize
}
