/* Print a table: n, the Collatz steps of n, and whether n is prime, for n = 1..LIMIT. */
#include <stdio.h>
#include <stdlib.h>

#include "numbers.h"

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: %s LIMIT\n", argv[0]);
        return 2;
    }
    char *end;
    unsigned long limit = strtoul(argv[1], &end, 10);
    if (*argv[1] == '\0' || *end != '\0' || limit == 0) {
        fprintf(stderr, "%s: LIMIT must be a positive number, not %s\n", argv[0], argv[1]);
        return 2;
    }
    for (unsigned long n = 1; n <= limit; n++)
        printf("%lu %u %s\n", n, collatz_steps(n), classify(n));
    return 0;
}
