/* own_net.c - embedding example: K-FAC from libkfac on a network of our
 * own. A two-layer tanh/softmax classifier with hand-written forward and
 * backward passes learns a random teacher's labels; libkfac only samples
 * targets and preconditions. The same steps of plain SGD run beside it.
 * Build: cc own_net.c $(pkg-config --cflags --libs kfac). Exit 0 if K-FAC
 * trains and does at least as well as SGD. */
#include <kfac.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

enum { IN = 8, HID = 32, OUT = 4, B = 64, N = 4096, STEPS = 400 };

/* Our network. Each W has its bias as the last column; each abar (a layer's
 * input) a last column of ones, as K-FAC's A factor wants them. */
typedef struct net {
    float w1[HID * (IN + 1)], w2[OUT * (HID + 1)];
    float dw1[HID * (IN + 1)], dw2[OUT * (HID + 1)]; /* mean gradients */
    float a0[B * (IN + 1)], a1[B * (HID + 1)];       /* abar_0, abar_1 */
    float z[B * OUT];                                /* logits */
    float g1[B * HID], g2[B * OUT];                  /* per-example dl/ds */
} net;

static float x_all[N * IN], y_all[N * OUT]; /* inputs, one-hot labels */

/* s = abar W^T for n rows; abar is n x din, W is dout x din */
static void dense(const float *abar, const float *w, int n, int din, int dout, float *s, int lds)
{
    for (int r = 0; r < n; r++)
        for (int o = 0; o < dout; o++) {
            float acc = 0.0f;
            for (int i = 0; i < din; i++)
                acc += abar[r * din + i] * w[o * din + i];
            s[r * lds + o] = acc;
        }
}

static void forward(net *m, const float *x, int n)
{
    for (int r = 0; r < n; r++) {
        memcpy(m->a0 + r * (IN + 1), x + r * IN, sizeof(float) * IN);
        m->a0[r * (IN + 1) + IN] = 1.0f;
    }
    dense(m->a0, m->w1, n, IN + 1, HID, m->a1, HID + 1);
    for (int r = 0; r < n; r++) {
        for (int h = 0; h < HID; h++)
            m->a1[r * (HID + 1) + h] = tanhf(m->a1[r * (HID + 1) + h]);
        m->a1[r * (HID + 1) + HID] = 1.0f;
    }
    dense(m->a1, m->w2, n, HID + 1, OUT, m->z, OUT);
}

/* Mean softmax cross-entropy against y; g2 <- softmax(z) - y per example. */
static double loss_backward_top(net *m, const float *y, int n)
{
    double loss = 0.0;
    for (int r = 0; r < n; r++) {
        const float *z = m->z + r * OUT;
        float mx = z[0], p[OUT];
        double s = 0.0;
        for (int o = 1; o < OUT; o++)
            mx = z[o] > mx ? z[o] : mx;
        for (int o = 0; o < OUT; o++)
            s += p[o] = expf(z[o] - mx);
        for (int o = 0; o < OUT; o++) {
            loss -= y[r * OUT + o] * ((z[o] - mx) - log(s));
            m->g2[r * OUT + o] = (float)(p[o] / s) - y[r * OUT + o];
        }
    }
    return loss / n;
}

/* g1 <- (g2 W2[:, :HID]) * tanh'; with grads, dW = (1/n) g^T abar. */
static void backward(net *m, int n, int grads)
{
    for (int r = 0; r < n; r++)
        for (int h = 0; h < HID; h++) {
            float acc = 0.0f, a = m->a1[r * (HID + 1) + h];
            for (int o = 0; o < OUT; o++)
                acc += m->g2[r * OUT + o] * m->w2[o * (HID + 1) + h];
            m->g1[r * HID + h] = acc * (1.0f - a * a);
        }
    if (!grads)
        return;
    memset(m->dw1, 0, sizeof m->dw1);
    memset(m->dw2, 0, sizeof m->dw2);
    for (int r = 0; r < n; r++) {
        for (int h = 0; h < HID; h++)
            for (int i = 0; i <= IN; i++)
                m->dw1[h * (IN + 1) + i] += m->g1[r * HID + h] * m->a0[r * (IN + 1) + i] / n;
        for (int o = 0; o < OUT; o++)
            for (int h = 0; h <= HID; h++)
                m->dw2[o * (HID + 1) + h] += m->g2[r * OUT + o] * m->a1[r * (HID + 1) + h] / n;
    }
}

static double full_loss(net *m)
{
    double total = 0.0;
    for (int first = 0; first < N; first += B) {
        forward(m, x_all + first * IN, B);
        total += loss_backward_top(m, y_all + first * OUT, B);
    }
    return total / (N / B);
}

/* Labels: argmax of a random tanh teacher of N(0, I) inputs. */
static void make_data(kfac_rng *rng)
{
    float t1[16 * IN], t2[OUT * 16];
    for (int i = 0; i < 16 * IN; i++)
        t1[i] = (float)kfac_rng_normal(rng);
    for (int i = 0; i < OUT * 16; i++)
        t2[i] = (float)kfac_rng_normal(rng);
    for (int r = 0; r < N; r++) {
        float h[16], best = -1e30f;
        int label = 0;
        for (int i = 0; i < IN; i++)
            x_all[r * IN + i] = (float)kfac_rng_normal(rng);
        for (int j = 0; j < 16; j++) {
            float acc = 0.0f;
            for (int i = 0; i < IN; i++)
                acc += t1[j * IN + i] * x_all[r * IN + i];
            h[j] = tanhf(acc);
        }
        for (int o = 0; o < OUT; o++) {
            float acc = 0.0f;
            for (int j = 0; j < 16; j++)
                acc += t2[o * 16 + j] * h[j];
            if (acc > best)
                best = acc, label = o;
        }
        y_all[r * OUT + label] = 1.0f;
        /* the student sees features on scales from 0.03 to 3: badly
         * conditioned for SGD, which is where curvature pays */
        for (int i = 0; i < IN; i++)
            x_all[r * IN + i] *= powf(10.0f, -1.5f + 2.0f * i / (IN - 1));
    }
}

static void init_weights(net *m, kfac_rng *rng)
{
    for (int i = 0; i < HID * (IN + 1); i++)
        m->w1[i] = (i % (IN + 1) == IN) ? 0.0f : (float)(kfac_rng_normal(rng) / sqrt(IN));
    for (int i = 0; i < OUT * (HID + 1); i++)
        m->w2[i] = (i % (HID + 1) == HID) ? 0.0f : (float)(kfac_rng_normal(rng) / sqrt(HID));
}

static net kf, sgd;

int main(void)
{
    kfac_rng rng;
    kfac_rng_seed(&rng, 7);
    make_data(&rng);
    init_weights(&kf, &rng);
    sgd = kf;
    double loss0 = full_loss(&kf);

    /* K-FAC for our two layers: d_in counts the bias column */
    int d_in[2] = {IN + 1, HID + 1}, d_out[2] = {HID, OUT};
    kfac_optim_params op;
    kfac_kfac_params kp;
    kfac_optim_params_init(&op);
    kfac_kfac_params_init(&kp);
    op.lr = 0.1f;
    op.momentum = 0.9f;
    kp.damping = 0.1f;
    kp.cov_every = 1;
    kp.inv_every = 10;
    kp.kl_clip = 0.01f;
    kfac_precond *pc;
    if (kfac_precond_new(2, d_in, d_out, B, &op, &kp, &pc) != KFAC_OK) {
        fprintf(stderr, "own_net: %s\n", kfac_last_error());
        return 1;
    }
    float ys[B * OUT];                      /* targets sampled from the model */
    float gs1[B * HID], gs2[B * OUT];       /* their per-example g */
    float *w[2] = {kf.w1, kf.w2};
    const float *grads[2] = {kf.dw1, kf.dw2}, *abar[2] = {kf.a0, kf.a1}, *gsamp[2] = {gs1, gs2};

    for (int step = 0; step < STEPS; step++) {
        int first = (step * B) % N;
        const float *x = x_all + first * IN, *y = y_all + first * OUT;

        forward(&kf, x, B); /* K-FAC */
        double loss = loss_backward_top(&kf, y, B);
        backward(&kf, B, 1);
        if (kfac_precond_stats_due(pc)) {
            /* G's statistics need g of targets drawn from the model */
            kfac_sample_targets(KFAC_LOSS_SOFTMAX_XENT, kf.z, ys, B, OUT, &rng);
            loss_backward_top(&kf, ys, B);
            backward(&kf, B, 0);
            memcpy(gs1, kf.g1, sizeof gs1);
            memcpy(gs2, kf.g2, sizeof gs2);
        }
        kfac_precond_batch batch = {B, w, grads, abar, gsamp, loss, NULL};
        if (kfac_precond_step(pc, &batch) != KFAC_OK) {
            fprintf(stderr, "own_net: %s\n", kfac_last_error());
            return 1;
        }

        forward(&sgd, x, B); /* plain SGD, same batches; lr 0.3 is the best of
                                0.1, 0.3, 1, 3 */
        loss_backward_top(&sgd, y, B);
        backward(&sgd, B, 1);
        for (int i = 0; i < HID * (IN + 1); i++)
            sgd.w1[i] -= 0.3f * sgd.dw1[i];
        for (int i = 0; i < OUT * (HID + 1); i++)
            sgd.w2[i] -= 0.3f * sgd.dw2[i];
    }
    double l_kfac = full_loss(&kf), l_sgd = full_loss(&sgd);
    printf("own_net: loss %.4f -> K-FAC %.4f, SGD %.4f after %d steps\n", loss0, l_kfac, l_sgd, STEPS);
    kfac_precond_free(pc);
    int ok = l_kfac < 0.5 * loss0 && l_kfac <= l_sgd;
    if (!ok)
        fprintf(stderr, "own_net: K-FAC did not train as well as SGD\n");
    return ok ? 0 : 1;
}
