/* LuMamba firmware runtime: status names and input validation. */
#include "lumamba_runtime.h"

#include <string.h>

const char *lumamba_status_name(int status)
{
    switch (status) {
    case LUMAMBA_OK: return "OK";
    case LUMAMBA_ERR_NONFINITE_INPUT: return "NONFINITE_INPUT";
    case LUMAMBA_ERR_NOT_INITIALISED: return "NOT_INITIALISED";
    case LUMAMBA_ERR_NULL_POINTER: return "NULL_POINTER";
    case LUMAMBA_ERR_INTERNAL: return "INTERNAL";
    case LUMAMBA_ERR_NONFINITE_OUTPUT: return "NONFINITE_OUTPUT";
    case LUMAMBA_ERR_BAD_ARGUMENT: return "BAD_ARGUMENT";
    default: return "UNKNOWN";
    }
}

int lumamba_check_finite(const float *x, size_t n)
{
    /* IEEE-754 binary32: a value is NaN or infinite exactly when its 8 exponent bits are all 1. */
    const uint32_t exponent_mask = 0x7F800000u;
    size_t i;

    if (x == NULL) {
        return LUMAMBA_ERR_NULL_POINTER;
    }
    for (i = 0; i < n; ++i) {
        uint32_t bits;
        memcpy(&bits, &x[i], sizeof bits);
        if ((bits & exponent_mask) == exponent_mask) {
            return LUMAMBA_ERR_NONFINITE_INPUT;
        }
    }
    return LUMAMBA_OK;
}
