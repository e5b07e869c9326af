/* precond_steps.c - the reference run for the Python binding's test of
 * kfac.Preconditioner (python/tests/test_kfac.py): kfac_precond driven
 * through the plain-struct C API (kfac_train_params, kfac_precond_new_positions,
 * kfac_precond_batch) on the arrays the test wrote, so the binding's steps
 * can be compared with it bit for bit.
 *
 *   precond_steps DIR
 *
 * DIR/config.txt holds "layers L", "d_in a b ...", "d_out a b ...",
 * "rows R", "steps S", "form grads|rows", "quadratic 0|1", optionally
 * "positions a b ..." (rows of abar and g per example:
 * kfac_precond_new_positions) and any number of "param NAME VALUE"
 * (kfac_train_params_set). The raw float32 files:
 * w<l>.bin the first weights; s<k>_grad<l>.bin, s<k>_abar<l>.bin,
 * s<k>_gs<l>.bin, s<k>_g<l>.bin step k's batch; fdiag.bin the diagonal
 * of the quadratic rule's stand-in Fisher (F v = fdiag * v, elementwise)
 * whose batch loss is 0.5 + w_0[0]^2. It writes out_s<k>_w<l>.bin, the
 * weights after step k, and out_dir<l>.bin, the last direction. Exit 0,
 * or 1 with the library's message on stderr. */
#include <kfac.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum { MAXL = KFAC_MAX_LAYERS };

static const char *dir;

static float *read_floats(const char *name, size_t n)
{
    char path[1024];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "rb");
    float *buf = malloc(n * sizeof *buf + 1);
    if (!f || !buf || fread(buf, sizeof *buf, n, f) != n) {
        fprintf(stderr, "precond_steps: cannot read %zu floats from %s\n", n, path);
        exit(1);
    }
    fclose(f);
    return buf;
}

static void write_floats(const char *name, const float *v, size_t n)
{
    char path[1024];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "wb");
    if (!f || fwrite(v, sizeof *v, n, f) != n || fclose(f) != 0) {
        fprintf(stderr, "precond_steps: cannot write %s\n", path);
        exit(1);
    }
}

typedef struct quad {
    const float *fdiag;
    float *w0;
    size_t n;
} quad;

static kfac_status fisher_vec(void *user, const float *v, float *fv)
{
    const quad *q = user;
    for (size_t i = 0; i < q->n; i++)
        fv[i] = q->fdiag[i] * v[i];
    return KFAC_OK;
}

static kfac_status batch_loss(void *user, double *loss)
{
    const quad *q = user;
    *loss = 0.5 + (double)q->w0[0] * (double)q->w0[0];
    return KFAC_OK;
}

static int fail(const char *what)
{
    fprintf(stderr, "precond_steps: %s: %s\n", what, kfac_last_error());
    return 1;
}

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: precond_steps DIR\n");
        return 2;
    }
    dir = argv[1];
    char path[1024], line[512];
    snprintf(path, sizeof path, "%s/config.txt", dir);
    FILE *cf = fopen(path, "r");
    if (!cf) {
        fprintf(stderr, "precond_steps: cannot open %s\n", path);
        return 1;
    }
    int L = 0, rows = 0, steps = 0, by_rows = 0, quadratic = 0, din[MAXL], dout[MAXL], pos[MAXL];
    for (int l = 0; l < MAXL; l++)
        pos[l] = 1;
    kfac_train_params tp;
    kfac_train_params_init(&tp);
    while (fgets(line, sizeof line, cf)) {
        char key[64], a[256], b[256];
        int n = sscanf(line, "%63s %255s %255s", key, a, b);
        if (n < 2)
            continue;
        if (!strcmp(key, "layers"))
            L = atoi(a);
        else if (!strcmp(key, "rows"))
            rows = atoi(a);
        else if (!strcmp(key, "steps"))
            steps = atoi(a);
        else if (!strcmp(key, "form"))
            by_rows = !strcmp(a, "rows");
        else if (!strcmp(key, "quadratic"))
            quadratic = atoi(a);
        else if (!strcmp(key, "d_in") || !strcmp(key, "d_out") || !strcmp(key, "positions")) {
            int *d = key[0] == 'p' ? pos : key[2] == 'i' ? din : dout, off = 0, used;
            const char *p = line + strlen(key);
            for (int l = 0; l < L && sscanf(p + off, "%d%n", &d[l], &used) == 1; l++)
                off += used;
        } else if (!strcmp(key, "param") && n == 3 && kfac_train_params_set(&tp, a, b) != KFAC_OK)
            return fail(a);
    }
    fclose(cf);
    if (L < 1 || L > MAXL || rows < 1 || steps < 1) {
        fprintf(stderr, "precond_steps: bad config\n");
        return 1;
    }
    /* the first-order settings as the trainer resolves them for K-FAC */
    tp.optimizer = KFAC_OPT_KFAC;
    kfac_optim_params op;
    kfac_train_params_resolve(&tp, &op);
    kfac_precond *pc;
    if (kfac_precond_new_positions(L, din, dout, pos, rows, &op, &tp.kfac, &pc) != KFAC_OK)
        return fail("kfac_precond_new_positions");
    float *w[MAXL];
    size_t total = 0;
    for (int l = 0; l < L; l++) {
        snprintf(line, sizeof line, "w%d.bin", l);
        w[l] = read_floats(line, (size_t)din[l] * dout[l]);
        total += (size_t)din[l] * dout[l];
    }
    quad q = {NULL, w[0], total};
    if (quadratic) {
        q.fdiag = read_floats("fdiag.bin", total);
        if (kfac_precond_set_fisher(pc, fisher_vec, batch_loss, &q) != KFAC_OK)
            return fail("kfac_precond_set_fisher");
    }
    for (int k = 0; k < steps; k++) {
        float *grad[MAXL] = {0}, *abar[MAXL] = {0}, *gs[MAXL] = {0}, *g[MAXL] = {0};
        int due = kfac_precond_stats_due(pc), srows = kfac_precond_stat_rows(pc, rows);
        for (int l = 0; l < L; l++) {
            if (!by_rows) {
                snprintf(line, sizeof line, "s%d_grad%d.bin", k, l);
                grad[l] = read_floats(line, (size_t)din[l] * dout[l]);
            } else {
                snprintf(line, sizeof line, "s%d_g%d.bin", k, l);
                g[l] = read_floats(line, (size_t)rows * pos[l] * dout[l]);
            }
            if (due || by_rows) {
                snprintf(line, sizeof line, "s%d_abar%d.bin", k, l);
                abar[l] = read_floats(line, (size_t)rows * pos[l] * din[l]);
            }
            if (due) {
                snprintf(line, sizeof line, "s%d_gs%d.bin", k, l);
                gs[l] = read_floats(line, (size_t)srows * pos[l] * dout[l]);
            }
        }
        double loss = 0.0;
        if (quadratic)
            batch_loss(&q, &loss);
        kfac_precond_batch b = {rows,
                                w,
                                by_rows ? NULL : (const float *const *)grad,
                                (due || by_rows) ? (const float *const *)abar : NULL,
                                due ? (const float *const *)gs : NULL,
                                loss,
                                by_rows ? (const float *const *)g : NULL};
        if (kfac_precond_step(pc, &b) != KFAC_OK)
            return fail("kfac_precond_step");
        for (int l = 0; l < L; l++) {
            snprintf(line, sizeof line, "out_s%d_w%d.bin", k, l);
            write_floats(line, w[l], (size_t)din[l] * dout[l]);
            free(grad[l]), free(abar[l]), free(gs[l]), free(g[l]);
        }
    }
    for (int l = 0; l < L; l++) {
        snprintf(line, sizeof line, "out_dir%d.bin", l);
        write_floats(line, kfac_precond_direction(pc, l), (size_t)din[l] * dout[l]);
        free(w[l]);
    }
    free((void *)q.fdiag);
    kfac_precond_free(pc);
    return 0;
}
