/* rng.h: the one random number generator of the fp8c runtime (parameter
 * initialisation, synthetic data, sampling), so that a run is a
 * pure function of its seed on every backend and every machine.
 *
 * splitmix64 (Steele, Lea, Flood 2014; the seeder of java.util.SplittableRandom
 * and of xoshiro): a 64-bit counter stepped by the golden-ratio increment and
 * mixed by two multiply-xorshift rounds. Any seed, including 0, is fine. The
 * state is the caller's uint64_t; there is no global state.
 *
 * Must not: depend on anything but libc and libm (rng_normal needs -lm).
 */
#ifndef FP8C_RUNTIME_RNG_H
#define FP8C_RUNTIME_RNG_H

#include <math.h>
#include <stdint.h>

static inline uint64_t rng_next(uint64_t *state)
{
    uint64_t z = (*state += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

/* Uniform in [0, 1): the top 24 bits, so every value is an exact float. */
static inline float rng_uniform(uint64_t *state)
{
    return (float)(rng_next(state) >> 40) * (1.0f / 16777216.0f);
}

/* Uniform integer in [0, n), n > 0 (multiply-shift; bias below 2^-32 for n < 2^32). */
static inline uint32_t rng_below(uint64_t *state, uint32_t n)
{
    return (uint32_t)(((rng_next(state) >> 32) * (uint64_t)n) >> 32);
}

/* Standard normal by Box-Muller, one draw per call (the second is dropped,
 * so the stream stays a function of the state alone). u1 is in (0, 1] so the
 * log is finite. Computed in double, rounded once to float. */
static inline float rng_normal(uint64_t *state)
{
    double u1 = ((double)(rng_next(state) >> 11) + 1.0) * (1.0 / 9007199254740992.0);
    double u2 = (double)(rng_next(state) >> 11) * (1.0 / 9007199254740992.0);
    return (float)(sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2));
}

#endif
