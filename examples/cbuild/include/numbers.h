/* numbers.h - small number-theory helpers shared by the demo program. */
#ifndef NUMBERS_H
#define NUMBERS_H

/* 1 if n is a prime number, else 0. */
int is_prime(unsigned long n);

/* Steps the Collatz sequence takes from n down to 1. */
unsigned collatz_steps(unsigned long n);

/* The label printed for n in the table's last column. */
const char *classify(unsigned long n);

#endif
