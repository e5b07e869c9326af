/* rng.c - xoshiro256** (Blackman & Vigna) seeded by splitmix64: fast,
 * 256 bits of plain state that a checkpoint can store. */
#include <math.h>

#include "common.h"

static uint64_t splitmix64(uint64_t *x)
{
    uint64_t z = (*x += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

void kfac_rng_seed(kfac_rng *r, uint64_t seed)
{
    if (!r)
        return;
    for (int i = 0; i < 4; i++)
        r->s[i] = splitmix64(&seed);
}

static inline uint64_t rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }

uint64_t kfac_rng_next(kfac_rng *r)
{
    uint64_t *s = r->s;
    uint64_t result = rotl(s[1] * 5, 7) * 9;
    uint64_t t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 45);
    return result;
}

double kfac_rng_uniform(kfac_rng *r)
{
    /* top 53 bits: every double in [0, 1) on a 2^-53 grid */
    return (double)(kfac_rng_next(r) >> 11) * 0x1.0p-53;
}

double kfac_rng_normal(kfac_rng *r)
{
    /* Marsaglia's polar method; the second deviate is discarded so the
     * generator state alone determines the sequence (no hidden cache). */
    double u, v, s;
    do {
        u = 2.0 * kfac_rng_uniform(r) - 1.0;
        v = 2.0 * kfac_rng_uniform(r) - 1.0;
        s = u * u + v * v;
    } while (s >= 1.0 || s == 0.0);
    return u * sqrt(-2.0 * log(s) / s);
}

uint32_t kfac_rng_below(kfac_rng *r, uint32_t n)
{
    /* Lemire's multiply-shift with rejection: unbiased */
    uint64_t m = (uint64_t)(uint32_t)(kfac_rng_next(r) >> 32) * n;
    uint32_t low = (uint32_t)m;
    if (low < n) {
        uint32_t threshold = -n % n;
        while (low < threshold) {
            m = (uint64_t)(uint32_t)(kfac_rng_next(r) >> 32) * n;
            low = (uint32_t)m;
        }
    }
    return (uint32_t)(m >> 32);
}
