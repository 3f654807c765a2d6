// Uses the installed kiln: a tensor op with autograd, checked by hand.
#include <cstdio>

#include <kiln/kiln.h>

int main() {
  kiln::Tensor x = kiln::tensor({1.0, 2.0, 3.0}).requires_grad_();
  kiln::Tensor y = kiln::sum(x * x);
  y.backward();
  double expected[] = {2.0, 4.0, 6.0};
  for (int i = 0; i < 3; ++i)
    if (x.grad()[i].item<double>() != expected[i]) return 1;
  std::printf("consumer: y = %s, dy/dx = %s\n", y.str().c_str(), x.grad().str().c_str());
  return y.item<double>() == 14.0 ? 0 : 1;
}
