#include "worker/attention_batch.h"

#include <algorithm>

#include "kernels/base/status.h"

namespace tessera {

absl::Status BuildAttentionBatch(absl::Span<const BatchSeq> seqs, int block_size,
                                 Tensor& input_ids, AttentionBatch& batch) {
  const int bs = block_size;
  const int num_seqs = static_cast<int>(seqs.size());
  int num_tokens = 0;
  size_t max_blocks = 1;
  for (const BatchSeq& sq : seqs) {
    num_tokens += static_cast<int>(sq.count);
    max_blocks = std::max(max_blocks, sq.blocks.size());
  }
  batch = AttentionBatch();
  batch.num_seqs = num_seqs;
  batch.num_tokens = num_tokens;
  batch.block_size = bs;
  ASSIGN_OR_RETURN(input_ids, Tensor::Empty({num_tokens}, DType::kI32));
  ASSIGN_OR_RETURN(batch.positions, Tensor::Empty({num_tokens}, DType::kI32));
  ASSIGN_OR_RETURN(batch.slot_mapping, Tensor::Empty({num_tokens}, DType::kI64));
  ASSIGN_OR_RETURN(batch.block_tables,
                   Tensor::Zeros({num_seqs, static_cast<int64_t>(max_blocks)}, DType::kI32));
  ASSIGN_OR_RETURN(batch.seq_lens, Tensor::Empty({num_seqs}, DType::kI32));
  ASSIGN_OR_RETURN(batch.query_start_loc, Tensor::Empty({num_seqs + 1}, DType::kI32));
  ASSIGN_OR_RETURN(batch.last_token_rows, Tensor::Empty({num_seqs}, DType::kI32));
  int32_t* idp = input_ids.data<int32_t>();
  int32_t* pos = batch.positions.data<int32_t>();
  int64_t* slots = batch.slot_mapping.data<int64_t>();
  int32_t* tables = batch.block_tables.data<int32_t>();
  int32_t* lens = batch.seq_lens.data<int32_t>();
  int32_t* qsl = batch.query_start_loc.data<int32_t>();
  int32_t* last = batch.last_token_rows.data<int32_t>();
  int row = 0;
  qsl[0] = 0;
  for (int s = 0; s < num_seqs; ++s) {
    const BatchSeq& sq = seqs[s];
    std::copy(sq.blocks.begin(), sq.blocks.end(), tables + s * max_blocks);
    const int64_t head = static_cast<int64_t>(sq.head.size());
    for (int64_t p = sq.start; p < sq.start + sq.count; ++p, ++row) {
      idp[row] = p < head ? sq.head[p] : sq.tail[p - head];
      pos[row] = static_cast<int32_t>(p);
      slots[row] = static_cast<int64_t>(sq.blocks[p / bs]) * bs + p % bs;
    }
    lens[s] = static_cast<int32_t>(sq.start + sq.count);
    qsl[s + 1] = row;
    last[s] = row - 1;
  }
  return absl::OkStatus();
}

}  // namespace tessera
