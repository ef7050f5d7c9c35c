#pragma once
/// \file
/// The key-padding set filter: some keys are padding and no query sees them.

#include <algorithm>
#include <utility>
#include <vector>

#include "kernattn/core/errors.hpp"
#include "kernattn/mask/mask.hpp"

namespace kernattn::mask {

/// \f$M(i) = \{ j : \mathrm{valid}_j \}\f$, from per-key valid flags or from valid lengths.
///
/// - `KeyPadding::from_flags(valid)`: `valid` holds \f$N_k\f$ flags shared by every sequence, or
///   \f$B \cdot N_k\f$ flags, sequence after sequence, for a batch of B sequences.
/// - `KeyPadding::from_lengths(lengths)`: sequence b has valid keys 0..lengths[b]-1; one length is
///   shared by every sequence.
class KeyPadding {
 public:
  using Flags = Eigen::Array<bool, Eigen::Dynamic, 1>;

  [[nodiscard]] static KeyPadding from_flags(Flags valid) {
    require(valid.size() > 0, "KeyPadding: the valid flags are empty");
    KeyPadding padding;
    padding.flags_ = std::move(valid);
    return padding;
  }

  [[nodiscard]] static KeyPadding from_lengths(std::vector<Index> lengths) {
    require(!lengths.empty(), "KeyPadding: the valid lengths are empty");
    for (std::size_t b = 0; b < lengths.size(); ++b)
      require(lengths[b] >= 0, "KeyPadding: lengths[", b, "] must be >= 0, got ", lengths[b]);
    KeyPadding padding;
    padding.lengths_ = std::move(lengths);
    return padding;
  }

  /// Keys [0, valid_length) are valid; with flags, `valid_before` counts valid keys before j.
  class Bound {
   public:
    Bound(const bool* flags, Index keys, Index valid_length)
        : flags_(flags), valid_length_(valid_length) {
      if (flags_ == nullptr) return;
      valid_before_.resize(static_cast<std::size_t>(keys) + 1, 0);
      for (Index j = 0; j < keys; ++j)
        valid_before_[std::size_t(j) + 1] = valid_before_[std::size_t(j)] + flags_[j];
    }

    [[nodiscard]] Coverage coverage(Range, Range cols) const {
      const Index valid =
          flags_ == nullptr
              ? std::clamp(valid_length_, cols.begin, cols.end) - cols.begin
              : valid_before_[std::size_t(cols.end)] - valid_before_[std::size_t(cols.begin)];
      if (valid == 0) return Coverage::hidden;
      return valid == cols.end - cols.begin ? Coverage::full : Coverage::partial;
    }
    [[nodiscard]] bool visible(Index, Index j) const {
      return flags_ == nullptr ? j < valid_length_ : flags_[j];
    }

   private:
    const bool* flags_;
    Index valid_length_;
    std::vector<Index> valid_before_;
  };

  [[nodiscard]] Bound bind(const Shape& shape) const {
    if (!lengths_.empty()) {
      const auto count = Index(lengths_.size());
      require(count == 1 || count == shape.sequences, "KeyPadding: ", count,
              " valid lengths given for a batch of ", shape.sequences, " sequences (give 1 or ",
              shape.sequences, ")");
      const Index length = lengths_[std::size_t(count == 1 ? 0 : shape.sequence)];
      require(length <= shape.keys, "KeyPadding: valid length ", length, " exceeds the ",
              shape.keys, " keys of sequence ", shape.sequence);
      return Bound(nullptr, shape.keys, length);
    }
    const Index count = flags_.size();
    require(count == shape.keys || count == shape.keys * shape.sequences, "KeyPadding: ", count,
            " valid flags given for ", shape.sequences, " sequence(s) of ", shape.keys,
            " keys (give ", shape.keys, " or ", shape.keys * shape.sequences, ")");
    const Index first = count == shape.keys ? 0 : shape.sequence * shape.keys;
    return Bound(flags_.data() + first, shape.keys, shape.keys);
  }

 private:
  KeyPadding() = default;

  Flags flags_;
  std::vector<Index> lengths_;
};

}  // namespace kernattn::mask
