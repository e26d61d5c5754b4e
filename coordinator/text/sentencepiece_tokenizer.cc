// SentencePiece Tokenizer (tokenizer.model; Mixtral / Mistral v1) over SentencePieceModel.
//
// Encode is libsentencepiece's; with allow_special the control pieces ("<s>", "</s>") and
// "<unk>" written in the text become their ids and the text between them is encoded on its
// own (each part gets the dummy-prefix "▁", as Hugging Face's Llama tokenizers do). Decode is
// reimplemented per token so that it can stream; it follows SentencePiece's DecodeIds: "▁" is a
// space, the leading "▁" of the first visible piece is dropped (add_dummy_prefix), each run of
// byte pieces (<0xAB>) is UTF-8 decoded with one U+FFFD per invalid byte, control pieces are
// invisible when skipping specials (otherwise their text), <unk> is " ⁇ ".
#include <string>
#include <string_view>

#include "absl/container/flat_hash_map.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"
#include "coordinator/text/sentencepiece_model.h"
#include "coordinator/text/tokenizer.h"

namespace tessera {
namespace {

constexpr char kSpace[] = "\xE2\x96\x81";  // U+2581 "▁".

class SentencePieceTokenizer final : public Tokenizer {
 public:
  explicit SentencePieceTokenizer(std::unique_ptr<SentencePieceModel> model)
      : model_(std::move(model)) {
    const int n = model_->size();
    kind_.resize(n);
    text_.resize(n);
    pieces_.resize(n);
    for (int id = 0; id < n; ++id) {
      pieces_[id] = model_->IdToPiece(id);
      if (model_->IsControl(id)) {
        kind_[id] = Kind::kControl;
        text_[id] = pieces_[id];
        specials_.emplace_back(pieces_[id], id);
      } else if (model_->IsUnknown(id)) {
        kind_[id] = Kind::kUnknown;
        text_[id] = " \xE2\x81\x87 ";  // " ⁇ ", SentencePiece's rendering of <unk>.
        specials_.emplace_back(pieces_[id], id);
      } else if (model_->IsByte(id)) {
        kind_[id] = Kind::kByte;
        uint32_t b = 0;
        // "<0xAB>"
        if (pieces_[id].size() == 6 && absl::SimpleHexAtoi(pieces_[id].substr(3, 2), &b)) {
          text_[id] = std::string(1, static_cast<char>(b));
        }
      } else {
        kind_[id] = Kind::kNormal;
        text_[id] = absl::StrReplaceAll(pieces_[id], {{kSpace, " "}});
      }
      piece_to_id_.emplace(pieces_[id], id);
    }
    // Normalizer flags are not exposed by the library's API (the model proto header is not
    // installed): probe them.
    const std::vector<int> a = model_->Encode("a");
    dummy_prefix_ = !a.empty() && absl::StartsWith(pieces_[a[0]], kSpace);
    remove_extra_ws_ = model_->DecodeIds(model_->Encode("a  b")) != "a  b";
    if (model_->bos_id() >= 0) set_bos_id(model_->bos_id());
    if (model_->eos_id() >= 0) set_eos_id(model_->eos_id());
  }

  int32_t vocab_size() const override { return static_cast<int32_t>(pieces_.size()); }
  std::optional<int32_t> TokenToId(absl::string_view token) const override {
    auto it = piece_to_id_.find(std::string(token));
    if (it == piece_to_id_.end()) return std::nullopt;
    return it->second;
  }
  std::optional<std::string> IdToToken(int32_t id) const override {
    if (id < 0 || id >= vocab_size()) return std::nullopt;
    return pieces_[id];
  }
  bool IsSpecial(int32_t id) const override {
    return id >= 0 && id < vocab_size() &&
           (kind_[id] == Kind::kControl || kind_[id] == Kind::kUnknown);
  }
  absl::string_view format() const override { return "sentencepiece"; }
  Replacement replacement() const override { return Replacement::kPerByte; }

  bool AppendTokenBytes(int32_t id, bool skip_special_tokens, DecodeState* state,
                        std::string* out) const override {
    state->ends_byte_run = false;
    if (id < 0 || id >= vocab_size()) return false;
    const std::string& text = text_[id];
    switch (kind_[id]) {
      case Kind::kByte:
        out->append(text);
        state->at_start = false;
        return true;
      case Kind::kControl:
        state->ends_byte_run = true;
        if (!skip_special_tokens) out->append(text);
        return true;
      case Kind::kUnknown:
        state->ends_byte_run = true;
        if (!skip_special_tokens) {
          out->append(text);
          state->at_start = false;
        }
        return true;
      case Kind::kNormal:
        break;
    }
    state->ends_byte_run = true;
    size_t skip = 0;
    if (state->at_start && (dummy_prefix_ || remove_extra_ws_)) {
      if (!text.empty() && text[0] == ' ') skip = 1;
      if (remove_extra_ws_) {
        while (skip < text.size() && text[skip] == ' ') ++skip;
      }
    }
    out->append(text, skip, std::string::npos);
    if (skip > 0 || text.size() > skip) state->at_start = false;
    return true;
  }

 protected:
  std::vector<int32_t> EncodeImpl(absl::string_view text, bool allow_special) const override {
    std::vector<int32_t> out;
    auto encode_text = [&](absl::string_view t) {
      if (t.empty()) return;
      for (int id : model_->Encode(std::string_view(t.data(), t.size()))) out.push_back(id);
    };
    if (!allow_special) {
      encode_text(text);
      return out;
    }
    size_t start = 0;
    for (size_t i = 0; i < text.size();) {
      const std::pair<std::string, int32_t>* hit = nullptr;
      if (text[i] == '<') {
        for (const auto& s : specials_) {
          if (absl::StartsWith(text.substr(i), s.first) &&
              (hit == nullptr || s.first.size() > hit->first.size())) {
            hit = &s;
          }
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

 private:
  enum class Kind : uint8_t { kNormal, kControl, kUnknown, kByte };

  std::unique_ptr<SentencePieceModel> model_;
  std::vector<Kind> kind_;
  std::vector<std::string> text_;    // id -> decoded text ("▁" as " "; byte value; " ⁇ ").
  std::vector<std::string> pieces_;  // id -> piece.
  absl::flat_hash_map<std::string, int32_t> piece_to_id_;
  std::vector<std::pair<std::string, int32_t>> specials_;  // Control pieces and <unk>.
  bool dummy_prefix_ = true;
  bool remove_extra_ws_ = false;
};

}  // namespace

absl::StatusOr<std::unique_ptr<Tokenizer>> LoadSentencePiece(const std::string& path) {
  std::string error;
  auto model = SentencePieceModel::Load(path, &error);
  if (model == nullptr) {
    return absl::InvalidArgumentError(
        absl::StrCat(path, ": not a SentencePiece model (", error, ")"));
  }
  return std::unique_ptr<Tokenizer>(new SentencePieceTokenizer(std::move(model)));
}

}  // namespace tessera
