// The module is header-only (spin.h); SwiftPM needs one source file in a C target.
#include "spin.h"
