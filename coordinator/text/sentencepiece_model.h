// Thin wrapper over libsentencepiece's SentencePieceProcessor with a std-only interface.
//
// sentencepiece_processor.h declares `namespace absl { using std::string_view; }`, which clashes
// with Abseil's own absl::string_view class (this project's absl does not alias std's), so the
// library header may only be included by sentencepiece_model.cc, which includes no Abseil
// header. sentencepiece_tokenizer.cc builds the Tokenizer on top of this class.
//
// Thread safety: immutable after Load; all methods are const and thread-safe (SentencePiece's
// processor is).
#pragma once

#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace tessera {

class SentencePieceModel {
 public:
  // Loads a SentencePiece model file; nullptr with `*error` set on failure.
  static std::unique_ptr<SentencePieceModel> Load(const std::string& path, std::string* error);
  ~SentencePieceModel();
  SentencePieceModel(const SentencePieceModel&) = delete;
  SentencePieceModel& operator=(const SentencePieceModel&) = delete;

  std::vector<int> Encode(std::string_view text) const;
  std::string DecodeIds(const std::vector<int>& ids) const;
  int size() const;
  std::string IdToPiece(int id) const;
  int PieceToId(std::string_view piece) const;
  bool IsControl(int id) const;
  bool IsUnknown(int id) const;
  bool IsByte(int id) const;
  int bos_id() const;
  int eos_id() const;

 private:
  struct Impl;
  explicit SentencePieceModel(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace tessera
