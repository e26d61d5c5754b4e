// SentencePiece wrapper (see sentencepiece_model.h). No Abseil header may be included here.
#include "coordinator/text/sentencepiece_model.h"

#include <sentencepiece_processor.h>

namespace tessera {

struct SentencePieceModel::Impl {
  sentencepiece::SentencePieceProcessor sp;
};

SentencePieceModel::SentencePieceModel(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
SentencePieceModel::~SentencePieceModel() = default;

std::unique_ptr<SentencePieceModel> SentencePieceModel::Load(const std::string& path,
                                                             std::string* error) {
  auto impl = std::make_unique<Impl>();
  const auto status = impl->sp.Load(path);
  if (!status.ok()) {
    *error = status.ToString();
    return nullptr;
  }
  return std::unique_ptr<SentencePieceModel>(new SentencePieceModel(std::move(impl)));
}

std::vector<int> SentencePieceModel::Encode(std::string_view text) const {
  std::vector<int> ids;
  impl_->sp.Encode(text, &ids).IgnoreError();  // Fails only without a model.
  return ids;
}
std::string SentencePieceModel::DecodeIds(const std::vector<int>& ids) const {
  return impl_->sp.DecodeIds(ids);
}
int SentencePieceModel::size() const { return impl_->sp.GetPieceSize(); }
std::string SentencePieceModel::IdToPiece(int id) const { return impl_->sp.IdToPiece(id); }
int SentencePieceModel::PieceToId(std::string_view piece) const {
  return impl_->sp.PieceToId(piece);
}
bool SentencePieceModel::IsControl(int id) const { return impl_->sp.IsControl(id); }
bool SentencePieceModel::IsUnknown(int id) const { return impl_->sp.IsUnknown(id); }
bool SentencePieceModel::IsByte(int id) const { return impl_->sp.IsByte(id); }
int SentencePieceModel::bos_id() const { return impl_->sp.bos_id(); }
int SentencePieceModel::eos_id() const { return impl_->sp.eos_id(); }

}  // namespace tessera
