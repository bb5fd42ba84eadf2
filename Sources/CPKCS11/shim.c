// CPKCS11 is a header-only module (see include/cpkcs11.h); SwiftPM needs one source file.
#include "cpkcs11.h"
