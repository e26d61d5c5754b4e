// SentencePiece Tokenizer (tokenizer.model; Mixtral / Mistral v1, Llama 2-style BPE models),
// implemented natively: libsentencepiece cannot be linked into tessera (its bundled protobuf
// collides with libprotobuf at static initialisation), so the ModelProto is read with a small
// protobuf wire-format reader and SentencePiece's BPE encoder is reproduced:
//   - normalizer: identity only (an empty precompiled_charsmap, as Mistral/Llama ship);
//     remove_extra_whitespaces, add_dummy_prefix ("▁" in front), escape_whitespaces (" " ->
//     "▁") as flagged; an invalid UTF-8 byte becomes U+FFFD (as SentencePiece's normalizer).
//   - BPE: the text is split into characters (user-defined pieces whole and frozen), then the
//     adjacent pair whose concatenation is a piece with the highest score is merged, leftmost
//     first on ties, until none is left; pieces of type UNUSED are split back into their merge
//     parts; a symbol that is no piece becomes <0xXX> byte pieces (byte_fallback) or <unk>
//     (consecutive unknowns fused into one).
//   - with allow_special, control pieces ("<s>", "</s>") and "<unk>" written in the text
//     become their ids; the text between them is encoded on its own (each part gets the dummy
//     prefix, as Hugging Face's Llama tokenizers do).
// Decode follows SentencePiece's DecodeIds per token (so that it can stream): "▁" is a space,
// the leading "▁" of the first visible piece is dropped (add_dummy_prefix), each run of byte
// pieces is UTF-8 decoded with one U+FFFD per invalid byte, control pieces are invisible when
// skipping specials (otherwise their text), <unk> is the unk surface (" ⁇ ").
// Unigram models and non-identity normalizers are rejected at load with an error.
#include <algorithm>
#include <cstring>
#include <functional>
#include <fstream>
#include <queue>
#include <sstream>
#include <string>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"
#include "coordinator/text/tokenizer.h"

namespace tessera {
namespace {

constexpr char kSpace[] = "\xE2\x96\x81";  // U+2581 "▁".

// Protobuf wire-format reader over one message.
class WireReader {
 public:
  explicit WireReader(absl::string_view data) : data_(data) {}
  bool done() const { return pos_ >= data_.size(); }
  bool ok() const { return ok_; }
  // Next field: number and wire type; false at the end or on malformed data.
  bool Next(uint32_t* field, uint32_t* wire_type) {
    if (done() || !ok_) return false;
    uint64_t key = 0;
    if (!Varint(&key)) return false;
    *field = static_cast<uint32_t>(key >> 3);
    *wire_type = static_cast<uint32_t>(key & 7);
    return true;
  }
  bool Varint(uint64_t* v) {
    *v = 0;
    for (int shift = 0; shift < 64; shift += 7) {
      if (pos_ >= data_.size()) return ok_ = false;
      const auto b = static_cast<unsigned char>(data_[pos_++]);
      *v |= static_cast<uint64_t>(b & 0x7F) << shift;
      if ((b & 0x80) == 0) return true;
    }
    return ok_ = false;
  }
  bool Bytes(absl::string_view* v) {
    uint64_t len = 0;
    if (!Varint(&len) || len > data_.size() - pos_) return ok_ = false;
    *v = data_.substr(pos_, len);
    pos_ += len;
    return true;
  }
  bool Fixed32(uint32_t* v) {
    if (data_.size() - pos_ < 4) return ok_ = false;
    std::memcpy(v, data_.data() + pos_, 4);
    pos_ += 4;
    return true;
  }
  bool Skip(uint32_t wire_type) {
    uint64_t v = 0;
    absl::string_view s;
    uint32_t f = 0;
    switch (wire_type) {
      case 0: return Varint(&v);
      case 1:
        if (data_.size() - pos_ < 8) return ok_ = false;
        pos_ += 8;
        return true;
      case 2: return Bytes(&s);
      case 5: return Fixed32(&f);
      default: return ok_ = false;
    }
  }

 private:
  absl::string_view data_;
  size_t pos_ = 0;
  bool ok_ = true;
};

// Length of the UTF-8 character at the start of `s` (1 for an invalid byte), and whether it
// is valid.
size_t CharLen(absl::string_view s, bool* valid) {
  std::string tmp;
  const size_t n = std::min<size_t>(4, s.size());
  const size_t used = AppendValidUtf8(s.substr(0, n), /*final=*/true,
                                      Tokenizer::Replacement::kPerByte, &tmp);
  (void)used;
  // tmp starts with the first char (valid) or U+FFFD (invalid byte).
  const auto c = static_cast<unsigned char>(s[0]);
  const size_t len = c < 0x80 ? 1 : (c >> 5) == 6 ? 2 : (c >> 4) == 14 ? 3 : (c >> 3) == 30 ? 4 : 1;
  *valid = len <= s.size() && tmp.compare(0, len, s.data(), len) == 0;
  return *valid ? len : 1;
}

class SentencePieceTokenizer final : public Tokenizer {
 public:
  static absl::StatusOr<std::unique_ptr<SentencePieceTokenizer>> Load(const std::string& path);

  int32_t vocab_size() const override { return static_cast<int32_t>(pieces_.size()); }
  std::optional<int32_t> TokenToId(absl::string_view token) const override {
    auto it = piece_to_id_.find(token);
    if (it == piece_to_id_.end()) return std::nullopt;
    return it->second;
  }
  std::optional<std::string> IdToToken(int32_t id) const override {
    if (id < 0 || id >= vocab_size()) return std::nullopt;
    return pieces_[id].piece;
  }
  bool IsSpecial(int32_t id) const override {
    return id >= 0 && id < vocab_size() &&
           (pieces_[id].type == kControl || pieces_[id].type == kUnknown);
  }
  absl::string_view format() const override { return "sentencepiece"; }
  Replacement replacement() const override { return Replacement::kPerByte; }
  bool AppendTokenBytes(int32_t id, bool skip_special_tokens, DecodeState* state,
                        std::string* out) const override;

 protected:
  std::vector<int32_t> EncodeImpl(absl::string_view text, bool allow_special) const override;

 private:
  // SentencePiece piece types (sentencepiece_model.proto).
  enum Type : uint8_t { kNormal = 1, kUnknown = 2, kControl = 3, kUserDefined = 4, kUnused = 5,
                        kByte = 6 };
  struct Piece {
    std::string piece;
    float score = 0;
    Type type = kNormal;
    std::string text;  // Decoded: "▁" as " ", the byte of a byte piece, the unk surface.
  };

  SentencePieceTokenizer() = default;
  // Identity normalization (see the file comment).
  std::string Normalize(absl::string_view text) const;
  // BPE of one normalized text, appended to `out`.
  void EncodeNormalized(const std::string& norm, std::vector<int32_t>* out) const;

  std::vector<Piece> pieces_;
  absl::flat_hash_map<std::string, int32_t> piece_to_id_;  // Every piece.
  absl::flat_hash_map<std::string, int32_t> mergeable_;    // NORMAL, USER_DEFINED, UNUSED.
  std::vector<std::string> user_defined_;                  // Longest first.
  std::vector<std::pair<std::string, int32_t>> specials_;  // Control pieces and <unk>.
  int32_t byte_ids_[256];
  int32_t unk_id_ = 0;
  bool byte_fallback_ = false;
  bool add_dummy_prefix_ = true;
  bool remove_extra_ws_ = true;
  bool escape_ws_ = true;
};

absl::StatusOr<std::unique_ptr<SentencePieceTokenizer>> SentencePieceTokenizer::Load(
    const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat(path, ": cannot open file"));
  std::stringstream buf;
  buf << in.rdbuf();
  const std::string data = buf.str();
  auto bad = [&](const std::string& what) {
    return absl::InvalidArgumentError(
        absl::StrCat(path, ": not a SentencePiece model (", what, ")"));
  };
  auto tok = std::unique_ptr<SentencePieceTokenizer>(new SentencePieceTokenizer());
  int64_t model_type = 1, bos = 1, eos = 2, unk = 0;
  std::string unk_surface = " \xE2\x81\x87 ";
  std::string normalizer_name;
  bool has_charsmap = false, suffix = false;
  WireReader model(data);
  uint32_t field = 0, wt = 0;
  while (model.Next(&field, &wt)) {
    absl::string_view sub;
    if (wt != 2 || (field != 1 && field != 2 && field != 3)) {
      if (!model.Skip(wt)) return bad("malformed ModelProto");
      continue;
    }
    if (!model.Bytes(&sub)) return bad("malformed ModelProto");
    WireReader r(sub);
    uint32_t f = 0, w = 0;
    if (field == 1) {  // SentencePiece {piece = 1, score = 2, type = 3}.
      Piece p;
      while (r.Next(&f, &w)) {
        absl::string_view s;
        uint64_t v = 0;
        uint32_t bits = 0;
        if (f == 1 && w == 2 && r.Bytes(&s)) {
          p.piece = std::string(s);
        } else if (f == 2 && w == 5 && r.Fixed32(&bits)) {
          std::memcpy(&p.score, &bits, 4);
        } else if (f == 3 && w == 0 && r.Varint(&v)) {
          p.type = static_cast<Type>(v);
        } else if (!r.Skip(w)) {
          break;
        }
      }
      if (!r.ok()) return bad("malformed piece");
      tok->pieces_.push_back(std::move(p));
    } else {
      // TrainerSpec {model_type = 3, treat_whitespace_as_suffix = 24, byte_fallback = 35,
      // unk_id = 40, bos_id = 41, eos_id = 42, unk_surface = 44} or NormalizerSpec {name = 1,
      // precompiled_charsmap = 2, add_dummy_prefix = 3, remove_extra_whitespaces = 4,
      // escape_whitespaces = 5}.
      while (r.Next(&f, &w)) {
        uint64_t v = 0;
        absl::string_view s;
        if (w == 0) {
          if (!r.Varint(&v)) break;
          const auto iv = static_cast<int64_t>(static_cast<int32_t>(v));
          if (field == 2) {
            if (f == 3) model_type = iv;
            if (f == 24) suffix = v != 0;
            if (f == 35) tok->byte_fallback_ = v != 0;
            if (f == 40) unk = iv;
            if (f == 41) bos = iv;
            if (f == 42) eos = iv;
          } else {
            if (f == 3) tok->add_dummy_prefix_ = v != 0;
            if (f == 4) tok->remove_extra_ws_ = v != 0;
            if (f == 5) tok->escape_ws_ = v != 0;
          }
        } else if (w == 2) {
          if (!r.Bytes(&s)) break;
          if (field == 2 && f == 44) unk_surface = std::string(s);
          if (field == 3 && f == 1) normalizer_name = std::string(s);
          if (field == 3 && f == 2) has_charsmap = !s.empty();
        } else if (!r.Skip(w)) {
          break;
        }
      }
      if (!r.ok()) return bad("malformed spec");
    }
  }
  if (!model.ok() || tok->pieces_.empty()) return bad("no pieces");
  if (model_type != 2) {
    return absl::InvalidArgumentError(absl::StrCat(
        path, ": SentencePiece model_type ", model_type,
        " is not supported (only BPE = 2; Unigram models are not implemented)"));
  }
  if (has_charsmap || suffix) {
    return absl::InvalidArgumentError(absl::StrCat(
        path, ": SentencePiece normalizer '", normalizer_name,
        "' with a precompiled charsmap / treat_whitespace_as_suffix is not supported (identity "
        "only)"));
  }
  for (int32_t& b : tok->byte_ids_) b = -1;
  for (size_t id = 0; id < tok->pieces_.size(); ++id) {
    Piece& p = tok->pieces_[id];
    const auto i = static_cast<int32_t>(id);
    tok->piece_to_id_.try_emplace(p.piece, i);
    switch (p.type) {
      case kNormal:
      case kUserDefined:
      case kUnused:
        tok->mergeable_.try_emplace(p.piece, i);
        p.text = absl::StrReplaceAll(p.piece, {{kSpace, " "}});
        if (p.type == kUserDefined) tok->user_defined_.push_back(p.piece);
        break;
      case kControl:
        p.text = p.piece;
        tok->specials_.emplace_back(p.piece, i);
        break;
      case kUnknown:
        p.text = unk_surface;
        tok->specials_.emplace_back(p.piece, i);
        tok->unk_id_ = i;
        break;
      case kByte: {
        uint32_t b = 0;
        if (p.piece.size() != 6 || !absl::SimpleHexAtoi(p.piece.substr(3, 2), &b) || b > 255) {
          return bad(absl::StrCat("byte piece '", p.piece, "'"));
        }
        p.text = std::string(1, static_cast<char>(b));
        tok->byte_ids_[b] = i;
        break;
      }
      default:
        return bad(absl::StrCat("piece ", id, " has type ", static_cast<int>(p.type)));
    }
  }
  if (tok->byte_fallback_) {
    for (int b = 0; b < 256; ++b) {
      if (tok->byte_ids_[b] < 0) return bad(absl::StrCat("byte_fallback without <0x", b, ">"));
    }
  }
  if (unk >= 0 && unk < tok->vocab_size()) tok->unk_id_ = static_cast<int32_t>(unk);
  std::sort(tok->user_defined_.begin(), tok->user_defined_.end(),
            [](const std::string& a, const std::string& b) { return a.size() > b.size(); });
  auto control = [&](int64_t id) -> std::optional<int32_t> {
    if (id < 0 || id >= tok->vocab_size() || tok->pieces_[id].type != kControl) {
      return std::nullopt;
    }
    return static_cast<int32_t>(id);
  };
  tok->set_bos_id(control(bos));
  tok->set_eos_id(control(eos));
  return tok;
}

std::string SentencePieceTokenizer::Normalize(absl::string_view text) const {
  std::string out;
  out.reserve(text.size() + 8);
  const std::string space = escape_ws_ ? kSpace : " ";
  bool pending_space = false, any = false;
  size_t i = 0;
  if (remove_extra_ws_) {
    while (i < text.size() && text[i] == ' ') ++i;
  }
  if (i < text.size() && add_dummy_prefix_) out += space;
  while (i < text.size()) {
    bool valid = false;
    const size_t len = CharLen(text.substr(i), &valid);
    if (text[i] == ' ') {
      if (remove_extra_ws_) {
        pending_space = true;
      } else {
        out += space;
      }
    } else {
      if (pending_space && any) out += space;
      pending_space = false;
      if (valid) {
        out.append(text.data() + i, len);
      } else {
        out += "\xEF\xBF\xBD";
      }
      any = true;
    }
    i += len;
  }
  return out;
}

void SentencePieceTokenizer::EncodeNormalized(const std::string& norm,
                                              std::vector<int32_t>* out) const {
  if (norm.empty()) return;
  struct Symbol {
    int prev, next;
    bool freeze;
    size_t begin, len;  // In `norm`; len 0 once merged away.
  };
  std::vector<Symbol> sym;
  for (size_t i = 0; i < norm.size();) {
    size_t len = 0;
    bool freeze = false;
    for (const std::string& u : user_defined_) {
      if (norm.compare(i, u.size(), u) == 0) {
        len = u.size();
        freeze = true;
        break;
      }
    }
    if (len == 0) {
      bool valid = false;
      len = CharLen(absl::string_view(norm).substr(i), &valid);
    }
    const int index = static_cast<int>(sym.size());
    sym.push_back({index - 1, i + len < norm.size() ? index + 1 : -1, freeze, i, len});
    i += len;
  }
  struct Pair {
    float score;
    int left, right;
    size_t size;
    bool operator<(const Pair& o) const {  // Max-heap: highest score, then leftmost.
      return score != o.score ? score < o.score : left > o.left;
    }
  };
  std::priority_queue<Pair> agenda;
  absl::flat_hash_map<std::string, std::pair<std::string, std::string>> rev_merge;
  const absl::string_view text(norm);
  auto maybe_add = [&](int left, int right) {
    if (left < 0 || right < 0 || sym[left].freeze || sym[right].freeze) return;
    const absl::string_view piece = text.substr(sym[left].begin, sym[left].len + sym[right].len);
    auto it = mergeable_.find(piece);
    if (it == mergeable_.end()) return;
    agenda.push({pieces_[it->second].score, left, right, piece.size()});
    if (pieces_[it->second].type == kUnused) {
      rev_merge[piece] = {std::string(text.substr(sym[left].begin, sym[left].len)),
                          std::string(text.substr(sym[right].begin, sym[right].len))};
    }
  };
  for (size_t i = 1; i < sym.size(); ++i) maybe_add(static_cast<int>(i) - 1, static_cast<int>(i));
  while (!agenda.empty()) {
    const Pair top = agenda.top();
    agenda.pop();
    Symbol& l = sym[top.left];
    Symbol& r = sym[top.right];
    if (l.len == 0 || r.len == 0 || l.len + r.len != top.size || l.next != top.right) continue;
    l.len += r.len;
    l.next = r.next;
    if (r.next >= 0) sym[r.next].prev = top.left;
    r.len = 0;
    maybe_add(l.prev, top.left);
    maybe_add(top.left, l.next);
  }
  bool prev_unk = false;
  auto emit_unknown = [&](absl::string_view piece) {
    if (byte_fallback_) {
      for (unsigned char c : piece) out->push_back(byte_ids_[c]);
      prev_unk = false;
      return;
    }
    if (!prev_unk) out->push_back(unk_id_);  // Consecutive unknowns fuse into one.
    prev_unk = true;
  };
  std::function<void(absl::string_view)> resegment = [&](absl::string_view piece) {
    auto it = mergeable_.find(piece);
    if (it != mergeable_.end() && pieces_[it->second].type != kUnused) {
      out->push_back(it->second);
      prev_unk = false;
      return;
    }
    auto rev = rev_merge.find(piece);
    if (rev == rev_merge.end()) {
      emit_unknown(piece);
      return;
    }
    const auto parts = rev->second;  // Copy: recursion may rehash rev_merge (it does not grow).
    resegment(parts.first);
    resegment(parts.second);
  };
  for (int i = 0; i >= 0; i = sym[i].next) resegment(text.substr(sym[i].begin, sym[i].len));
}

std::vector<int32_t> SentencePieceTokenizer::EncodeImpl(absl::string_view text,
                                                        bool allow_special) const {
  std::vector<int32_t> out;
  auto encode_text = [&](absl::string_view t) {
    if (!t.empty()) EncodeNormalized(Normalize(t), &out);
  };
  if (!allow_special) {
    encode_text(text);
    return out;
  }
  size_t start = 0;
  for (size_t i = 0; i < text.size();) {
    const std::pair<std::string, int32_t>* hit = nullptr;
    for (const auto& s : specials_) {
      if (text.compare(i, s.first.size(), s.first) == 0 &&
          (hit == nullptr || s.first.size() > hit->first.size())) {
        hit = &s;
      }
    }
    if (hit == nullptr) {
      ++i;
      continue;
    }
    encode_text(text.substr(start, i - start));
    out.push_back(hit->second);
    i += hit->first.size();
    start = i;
  }
  encode_text(text.substr(start));
  return out;
}

bool SentencePieceTokenizer::AppendTokenBytes(int32_t id, bool skip_special_tokens,
                                              DecodeState* state, std::string* out) const {
  state->ends_byte_run = false;
  if (id < 0 || id >= vocab_size()) return false;
  const Piece& p = pieces_[id];
  switch (p.type) {
    case kByte:
      out->append(p.text);
      state->at_start = false;
      return true;
    case kControl:
      state->ends_byte_run = true;
      if (!skip_special_tokens) out->append(p.text);
      return true;
    case kUnknown:
      state->ends_byte_run = true;
      if (!skip_special_tokens) {
        out->append(p.text);
        state->at_start = false;
      }
      return true;
    default:
      break;
  }
  state->ends_byte_run = true;
  size_t skip = 0;
  if (state->at_start && (add_dummy_prefix_ || remove_extra_ws_)) {
    if (!p.text.empty() && p.text[0] == ' ') skip = 1;
    if (remove_extra_ws_) {
      while (skip < p.text.size() && p.text[skip] == ' ') ++skip;
    }
  }
  out->append(p.text, skip, std::string::npos);
  if (skip > 0 || p.text.size() > skip) state->at_start = false;
  return true;
}

}  // namespace

absl::StatusOr<std::unique_ptr<Tokenizer>> LoadSentencePiece(const std::string& path) {
  auto tok = SentencePieceTokenizer::Load(path);
  if (!tok.ok()) return tok.status();
  return std::unique_ptr<Tokenizer>(std::move(*tok));
}

}  // namespace tessera
