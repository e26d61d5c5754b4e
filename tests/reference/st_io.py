"""Minimal safetensors reader/writer in plain numpy, for the reference implementations.

Contract:
  * `Checkpoint(dir[, block_size])` opens `model.safetensors.index.json` when present (following its
    `weight_map`), otherwise every `*.safetensors` file in `dir`. `get(name)` returns the tensor as
    a float64 numpy array; F8_E4M3 weights that have a companion `<name>_scale_inv` tensor are
    dequantised block-wise with the checkpoint's
    quantization_config.weight_block_size (default [128, 128]). A name stored as MXFP4
    (`<name>_blocks` U8 [E, out, in/32, 16] + `<name>_scales` U8 [E, out, in/32], the gpt-oss
    release) is dequantised and transposed to [E, in, out], the layout of the bf16 tensor `<name>`.
  * Decoding is written from the format definitions, not from any library:
      - BF16: the upper 16 bits of an IEEE binary32, so widen by shifting into a uint32.
      - F8_E4M3 (e4m3fn): 1 sign, 4 exponent (bias 7), 3 mantissa bits, subnormals when the
        exponent field is 0, no infinities, S.1111.111 is NaN; decoded with a 256-entry table.
      - F16, F32, F64, integer types: native numpy dtypes (little endian).
      - MXFP4 (OCP microscaling as transformers' integrations/mxfp4.py reads it): element
        32*g + 2*b of row r = FP4[blocks[..., r, g, b] & 0xF] * 2^(scales[..., r, g] - 127),
        element 32*g + 2*b + 1 the high nibble, FP4 = the 16 e2m1 values (code bit 3 = sign).
  * `write_safetensors(path, tensors)` writes {name: (dtype_str, ndarray)}; used only by the test
    helpers that build tiny checkpoints. `encode_bf16` rounds to nearest even; `encode_e4m3`
    rounds to the nearest representable e4m3fn value (saturating at +-448).

Thread safety: a Checkpoint caches decoded tensors in a dict; use one per thread.
"""

import json
import os
import struct

import numpy as np


def _build_e4m3fn_table():
    table = np.zeros(256, dtype=np.float64)
    for byte in range(256):
        sign = -1.0 if byte & 0x80 else 1.0
        exp = (byte >> 3) & 0xF
        man = byte & 0x7
        if exp == 0xF and man == 0x7:
            table[byte] = np.nan
        elif exp == 0:
            table[byte] = sign * (man / 8.0) * 2.0 ** (1 - 7)
        else:
            table[byte] = sign * (1.0 + man / 8.0) * 2.0 ** (exp - 7)
    return table


E4M3FN_TABLE = _build_e4m3fn_table()
E4M3FN_MAX = 448.0

_NATIVE = {
    "F64": np.float64, "F32": np.float32, "F16": np.float16,
    "I64": np.int64, "I32": np.int32, "I16": np.int16, "I8": np.int8,
    "U8": np.uint8, "U16": np.uint16, "U32": np.uint32, "U64": np.uint64, "BOOL": np.bool_,
}
_ITEMSIZE = {"BF16": 2, "F8_E4M3": 1}


# e2m1 code -> value: bit 3 sign, bits 1-2 exponent (bias 1), bit 0 mantissa; exponent 0 is
# subnormal (0, 0.5).
FP4_VALUES = np.array([(-1.0 if c & 8 else 1.0) *
                       ((c & 1) * 0.5 if (c >> 1) & 3 == 0 else
                        (1.0 + (c & 1) * 0.5) * 2.0 ** (((c >> 1) & 3) - 1))
                       for c in range(16)])


def dequantize_mxfp4(blocks, scales):
    """blocks uint8 [..., G, 16], scales uint8 [..., G] -> float64 [..., G * 32]."""
    blocks = np.asarray(blocks, dtype=np.uint8)
    scales = np.asarray(scales, dtype=np.uint8)
    if blocks.shape[:-1] != scales.shape or blocks.shape[-1] != 16:
        raise ValueError(f"MXFP4 blocks {blocks.shape} and scales {scales.shape} do not match")
    vals = np.empty(blocks.shape[:-1] + (32,), dtype=np.float64)
    vals[..., 0::2] = FP4_VALUES[blocks & 0x0F]
    vals[..., 1::2] = FP4_VALUES[blocks >> 4]
    vals = np.ldexp(vals, scales.astype(np.int32)[..., None] - 127)
    return vals.reshape(blocks.shape[:-2] + (blocks.shape[-2] * 32,))


def decode_bf16(raw_u16):
    """uint16 array of bfloat16 bit patterns -> float32 array."""
    return (raw_u16.astype(np.uint32) << 16).view(np.float32)


def decode_e4m3(raw_u8):
    """uint8 array of e4m3fn bit patterns -> float64 array."""
    return E4M3FN_TABLE[raw_u8]


def encode_bf16(x):
    """float array -> uint16 bfloat16 bit patterns, round to nearest even (NaN kept NaN)."""
    f = np.ascontiguousarray(x, dtype=np.float32)
    u = f.view(np.uint32).astype(np.uint64)
    rounded = ((u + 0x7FFF + ((u >> 16) & 1)) >> 16).astype(np.uint16)
    nan = np.isnan(f)
    rounded[nan] = 0x7FC0
    return rounded


def bf16_round(x):
    """Rounds a float array to the nearest bfloat16 value (returned as float64)."""
    return decode_bf16(encode_bf16(x)).astype(np.float64)


_E4M3_FINITE_CODES = np.array([b for b in range(256) if not np.isnan(E4M3FN_TABLE[b])],
                              dtype=np.uint8)
_E4M3_ORDER = np.argsort(E4M3FN_TABLE[_E4M3_FINITE_CODES], kind="stable")
_E4M3_SORTED_VALUES = E4M3FN_TABLE[_E4M3_FINITE_CODES][_E4M3_ORDER]
_E4M3_SORTED_CODES = _E4M3_FINITE_CODES[_E4M3_ORDER]


def encode_e4m3(x):
    """float array -> uint8 e4m3fn codes, nearest value, saturating to +-448."""
    v = np.clip(np.asarray(x, dtype=np.float64), -E4M3FN_MAX, E4M3FN_MAX).ravel()
    hi = np.clip(np.searchsorted(_E4M3_SORTED_VALUES, v), 1, len(_E4M3_SORTED_VALUES) - 1)
    lo = hi - 1
    pick_hi = np.abs(_E4M3_SORTED_VALUES[hi] - v) < np.abs(_E4M3_SORTED_VALUES[lo] - v)
    idx = np.where(pick_hi, hi, lo)
    return _E4M3_SORTED_CODES[idx].reshape(np.shape(x))


def quantize_fp8_blockwise(w, block):
    """w: [out, in] float -> (codes uint8 [out, in], scale_inv f32 [ceil(out/b0), ceil(in/b1)]).
    Leading axes (stacked experts [E, a, b]) are quantised one matrix at a time."""
    if w.ndim > 2:
        parts = [quantize_fp8_blockwise(m, block) for m in w]
        return np.stack([p[0] for p in parts]), np.stack([p[1] for p in parts])
    out_dim, in_dim = w.shape
    b0, b1 = block
    nb0, nb1 = -(-out_dim // b0), -(-in_dim // b1)
    codes = np.zeros(w.shape, dtype=np.uint8)
    scale_inv = np.zeros((nb0, nb1), dtype=np.float32)
    for i in range(nb0):
        for j in range(nb1):
            blk = w[i * b0:(i + 1) * b0, j * b1:(j + 1) * b1]
            amax = float(np.max(np.abs(blk))) if blk.size else 0.0
            s = np.float32(amax / E4M3FN_MAX if amax > 0 else 1.0)
            scale_inv[i, j] = s
            codes[i * b0:(i + 1) * b0, j * b1:(j + 1) * b1] = encode_e4m3(blk / float(s))
    return codes, scale_inv


def read_header(path):
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(n))
    return header, 8 + n


class SafetensorsFile:
    """One .safetensors file, memory-mapped."""

    def __init__(self, path):
        self.path = path
        self.header, self.data_start = read_header(path)
        self.header.pop("__metadata__", None)
        self._mm = np.memmap(path, dtype=np.uint8, mode="r")

    def names(self):
        return list(self.header.keys())

    def dtype(self, name):
        return self.header[name]["dtype"]

    def raw(self, name):
        """Returns (dtype_str, array) where BF16/F8 come back as their decoded floats."""
        meta = self.header[name]
        dt, shape = meta["dtype"], tuple(meta["shape"])
        begin, end = meta["data_offsets"]
        buf = self._mm[self.data_start + begin:self.data_start + end]
        count = int(np.prod(shape)) if shape else 1
        if dt == "BF16":
            arr = decode_bf16(np.frombuffer(buf, dtype="<u2", count=count))
        elif dt == "F8_E4M3":
            arr = decode_e4m3(np.frombuffer(buf, dtype=np.uint8, count=count))
        elif dt in _NATIVE:
            arr = np.frombuffer(buf, dtype=np.dtype(_NATIVE[dt]).newbyteorder("<"), count=count)
        else:
            raise ValueError(f"{self.path}: tensor {name}: unsupported dtype {dt}")
        expect = count * (_ITEMSIZE.get(dt) or np.dtype(_NATIVE[dt]).itemsize)
        if end - begin != expect:
            raise ValueError(f"{self.path}: tensor {name}: {end - begin} bytes, expected {expect}")
        return dt, arr.reshape(shape)


class Checkpoint:
    """All tensors of a Hugging Face checkpoint directory, decoded to float64 on demand."""

    def __init__(self, model_dir, block_size=None):
        """block_size: fp8 weight block [rows, cols]; default: config.json's
        quantization_config.weight_block_size, else [128, 128]."""
        self.dir = model_dir
        self._files = {}
        if block_size is None:
            block_size = [128, 128]
            cfg_path = os.path.join(model_dir, "config.json")
            if os.path.exists(cfg_path):
                with open(cfg_path) as f:
                    q = json.load(f).get("quantization_config") or {}
                block_size = q.get("weight_block_size") or block_size
        self.block = tuple(int(b) for b in block_size)
        self._where = {}
        index = os.path.join(model_dir, "model.safetensors.index.json")
        if os.path.exists(index):
            with open(index) as f:
                weight_map = json.load(f)["weight_map"]
            for name, fname in weight_map.items():
                self._where[name] = fname
        else:
            fnames = sorted(p for p in os.listdir(model_dir) if p.endswith(".safetensors"))
            if not fnames:
                raise FileNotFoundError(f"{model_dir}: no *.safetensors files")
            for fname in fnames:
                for name in self._file(fname).names():
                    self._where[name] = fname
        self._cache = {}
        self.accessed = set()  # names read through get() (scales included): coverage checks

    def unused(self):
        """Tensors of the checkpoint the model never read (a naming or semantics mismatch)."""
        return sorted(set(self._where) - self.accessed)

    def _file(self, fname):
        if fname not in self._files:
            self._files[fname] = SafetensorsFile(os.path.join(self.dir, fname))
        return self._files[fname]

    def names(self):
        return list(self._where.keys())

    def has(self, name):
        return name in self._where

    def dtype(self, name):
        return self._file(self._where[name]).dtype(name)

    def get(self, name):
        self.accessed.add(name)
        if name in self._cache:
            return self._cache[name]
        if name not in self._where and self.has(name + "_blocks"):
            # MXFP4 release tensor: [E, out, in] after dequantisation, then HF's x @ W layout.
            bname, sname = name + "_blocks", name + "_scales"
            if not self.has(sname):
                raise KeyError(f"{self.dir}: MXFP4 tensor {bname} has no {sname}")
            self.accessed.update((bname, sname))
            raw = []
            for n in (bname, sname):
                dt, arr = self._file(self._where[n]).raw(n)
                if dt != "U8":
                    raise ValueError(f"{self.dir}: MXFP4 tensor {n} is {dt}, expected U8")
                raw.append(arr)
            arr = np.swapaxes(dequantize_mxfp4(*raw), -1, -2)
            self._cache[name] = arr
            return arr
        if name not in self._where:
            raise KeyError(f"{self.dir}: tensor {name} not found in checkpoint")
        dt, arr = self._file(self._where[name]).raw(name)
        arr = np.asarray(arr, dtype=np.float64)
        if dt == "F8_E4M3":
            sname = name + "_scale_inv"
            if not self.has(sname):
                raise KeyError(f"{self.dir}: fp8 tensor {name} has no {sname}")
            scale = self.get(sname)
            if arr.ndim < 2 or scale.ndim != arr.ndim:
                raise ValueError(f"{self.dir}: fp8 tensor {name}: weight {arr.shape} and scale "
                                 f"{scale.shape} must have the same rank >= 2")
            # Blocks tile the last two axes (stacked experts [E, in, out] have [E, bi, bo]).
            b0, b1 = self.block
            want = arr.shape[:-2] + (-(-arr.shape[-2] // b0), -(-arr.shape[-1] // b1))
            if scale.shape != want:
                raise ValueError(f"{self.dir}: {sname} has shape {scale.shape}, expected {want} "
                                 f"for block size {self.block}")
            full = np.repeat(np.repeat(scale, b0, axis=-2), b1, axis=-1)
            arr = arr * full[..., :arr.shape[-2], :arr.shape[-1]]
        self._cache[name] = arr
        return arr


def write_safetensors(path, tensors, metadata=None):
    """tensors: {name: (dtype_str, ndarray)} with dtype_str in F32/F16/BF16/F8_E4M3/I64..."""
    header = {}
    blobs = []
    offset = 0
    for name in sorted(tensors):
        dt, arr = tensors[name]
        if dt == "BF16":
            data = encode_bf16(arr).astype("<u2").tobytes()
        elif dt == "F8_E4M3":
            data = np.ascontiguousarray(arr, dtype=np.uint8).tobytes()
        else:
            le = np.dtype(_NATIVE[dt]).newbyteorder("<")
            data = np.ascontiguousarray(arr, dtype=le).tobytes()
        header[name] = {"dtype": dt, "shape": list(np.shape(arr)),
                        "data_offsets": [offset, offset + len(data)]}
        blobs.append(data)
        offset += len(data)
    if metadata:
        header["__metadata__"] = metadata
    hbytes = json.dumps(header, separators=(",", ":")).encode()
    hbytes += b" " * ((8 - len(hbytes) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(hbytes)))
        f.write(hbytes)
        for b in blobs:
            f.write(b)
