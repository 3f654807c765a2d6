// PyTorch-style printing: tensor([[1.0000, 2.0000]], dtype=float64, requires_grad=True).

#include <cmath>
#include <ostream>

#include "dispatch.h"

namespace kiln {

namespace {

constexpr int64_t kSummarizeAbove = 1000;  // elements; larger tensors show 3 per edge
constexpr int64_t kEdgeItems = 3;

struct Formatter {
  enum class Style { Integer, IntegralFloat, Fixed, Scientific, Bool } style;

  static Formatter for_values(DType dtype, const std::vector<double>& values) {
    if (dtype == kBool) return {Style::Bool};
    if (!is_floating(dtype)) return {Style::Integer};
    double max_abs = 0, min_abs = INFINITY;
    bool integral = true;
    for (double v : values) {
      if (!std::isfinite(v)) continue;
      max_abs = std::max(max_abs, std::abs(v));
      if (v != 0) min_abs = std::min(min_abs, std::abs(v));
      integral = integral && v == std::floor(v);
    }
    if (integral && max_abs < 1e8) return {Style::IntegralFloat};
    if (max_abs >= 1e8 || (min_abs < 1e-4 && std::isfinite(min_abs)) || max_abs / min_abs > 1e5)
      return {Style::Scientific};
    return {Style::Fixed};
  }

  std::string operator()(double v) const {
    if (style == Style::Bool) return v != 0 ? "True" : "False";
    if (style == Style::Integer) return fmt::format("{}", static_cast<int64_t>(v));
    if (std::isnan(v)) return "nan";
    if (std::isinf(v)) return v > 0 ? "inf" : "-inf";
    switch (style) {
      case Style::IntegralFloat: return fmt::format("{:.0f}.", v);
      case Style::Scientific: return fmt::format("{:.4e}", v);
      default: return fmt::format("{:.4f}", v);
    }
  }
};

struct Printer {
  const Tensor& t;  // contiguous float64 on the CPU
  const Formatter& fmt_;
  size_t width;
  bool summarize;
  std::string out;

  void element(int64_t offset) {
    std::string s = fmt_(t.data_ptr<double>()[offset]);
    out += std::string(width - std::min(width, s.size()), ' ') + s;
  }

  // Between elements of dim d: ", " in the last dim, else a comma, a blank line
  // per remaining dim, and the indent of the next block.
  void separator(int64_t d, size_t indent) {
    if (d == t.dim() - 1) {
      out += ", ";
      return;
    }
    out += ',';
    out.append(static_cast<size_t>(t.dim() - d - 1), '\n');
    out.append(indent + 1, ' ');
  }

  // Prints dim d of the block starting at offset; indent counts columns.
  void block(int64_t d, int64_t offset, size_t indent) {
    out += '[';
    int64_t n = t.size(d), stride = t.stride(d);
    bool last = d == t.dim() - 1;
    for (int64_t i = 0; i < n; ++i) {
      if (summarize && n > 2 * kEdgeItems && i == kEdgeItems) {
        out += "...";
        separator(d, indent);
        i = n - kEdgeItems;
      }
      if (last) element(offset + i * stride);
      else block(d + 1, offset + i * stride, indent + 1);
      if (i + 1 < n) separator(d, indent);
    }
    out += ']';
  }
};

}  // namespace

std::string Tensor::str() const {
  if (!defined()) return "tensor(undefined)";
  autograd::NoGradGuard no_grad;
  Tensor v = to(kCPU, kFloat64).contiguous();
  bool summarize = numel() > kSummarizeAbove;
  std::vector<double> shown;
  const double* p = v.data_ptr<double>();
  shown.assign(p, p + v.numel());
  Formatter f = Formatter::for_values(dtype(), shown);
  size_t width = 0;
  for (double x : shown) width = std::max(width, f(x).size());
  std::string s = "tensor(";
  if (dim() == 0) {
    s += f(p[0]);
  } else if (numel() == 0) {
    s += "[]";
  } else {
    Printer pr{v, f, width, summarize, {}};
    pr.block(0, 0, 7);
    s += pr.out;
  }
  std::vector<std::string> extras;
  if (numel() == 0 && dim() > 0) extras.push_back(fmt::format("size={}", detail::shape_str(sizes())));
  if (device() != kCPU) extras.push_back(fmt::format("device='{}'", device()));
  if (dtype() != kFloat32 && dtype() != kInt64 && dtype() != kBool) extras.push_back(fmt::format("dtype={}", dtype()));
  if (grad_fn()) extras.push_back(fmt::format("grad_fn=<{}Backward>", grad_fn()->name()));
  else if (requires_grad()) extras.push_back("requires_grad=True");
  for (const auto& e : extras) s += ", " + e;
  return s + ")";
}

std::ostream& operator<<(std::ostream& os, const Tensor& t) { return os << t.str(); }

}  // namespace kiln
