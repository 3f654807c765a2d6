#include "kiln/settings.h"

namespace kiln {

Settings& settings() {
  static Settings s;
  return s;
}

}  // namespace kiln
