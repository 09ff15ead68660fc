#include "numbers.h"

int is_prime(unsigned long n)
{
    if (n < 2)
        return 0;
    for (unsigned long d = 2; d * d <= n; d++)
        if (n % d == 0)
            return 0;
    return 1;
}

const char *classify(unsigned long n)
{
    if (n < 2)
        return "unit";
    return is_prime(n) ? "prime" : "composite";
}
