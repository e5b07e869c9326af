/* progress.c - the progress line `kfac train` redraws on a terminal
 * (stderr) during an epoch; a function of its figures alone, so the test
 * suite checks it without a terminal. */
#include <math.h>
#include <stdio.h>

#include "cli.h"

/* m:ss, or h:mm:ss from an hour; "?" beyond 99 days or not finite */
static void duration(char *buf, size_t size, double seconds)
{
    if (!isfinite(seconds) || seconds < 0 || seconds > 99 * 86400.0) {
        snprintf(buf, size, "?");
        return;
    }
    long s = (long)(seconds + 0.5);
    if (s < 3600)
        snprintf(buf, size, "%ld:%02ld", s / 60, s % 60);
    else
        snprintf(buf, size, "%ld:%02ld:%02ld", s / 3600, s / 60 % 60, s % 60);
}

int cli_progress_format(char *buf, size_t size, int epoch, int epochs, long examples, long total,
                        double mean_loss, double rate)
{
    int pct = total > 0 ? (int)(100 * examples / total) : 0;
    int n = snprintf(buf, size, "  epoch %d/%d %3d%%", epoch, epochs, pct);
    if (n >= 0 && (size_t)n < size && isfinite(mean_loss))
        n += snprintf(buf + n, size - (size_t)n, "  loss %.6f", mean_loss);
    if (n >= 0 && (size_t)n < size && rate > 0) {
        /* the rest of this epoch, then the epochs after it */
        long left = total - examples;
        char e[32], r[32];
        duration(e, sizeof e, (double)left / rate);
        duration(r, sizeof r, ((double)left + (double)(epochs - epoch) * (double)total) / rate);
        n += snprintf(buf + n, size - (size_t)n, "  %.0f ex/s  ETA %s epoch, %s run", rate, e, r);
    }
    return n;
}
