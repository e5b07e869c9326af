/* checkpoint.c - the public save and load of trainers, networks and
 * preconditioners: what a checkpoint holds (the architecture, the
 * optimizer's kind, then the objects' own visitors) over the byte format of
 * ckio.c. Loading checks the whole file (network, kinds, sizes, length)
 * in a dry run before it changes anything. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ckio.h"
#include "common.h"
#include "net.h"
#include "optim.h"
#include "precond.h"
#include "train.h"

/* ------------------------------------------------------ what is saved */

/* The architecture (what decides theta's layout and meaning); init and
 * training settings are not part of it. */
static void arch_io(kfac_ckio *io, kfac_net_spec *s)
{
    uint32_t v[4] = {(uint32_t)s->inputs, (uint32_t)s->n_layers, (uint32_t)s->loss, (uint32_t)s->input_pool};
    for (int i = 0; i < 4; i++)
        kfac_ckio_u32(io, &v[i]);
    if (io->mode == KFAC_CKIO_WRITE || io->status != KFAC_OK)
        goto layers;
    if (v[1] < 1 || v[1] > KFAC_MAX_LAYERS) {
        io->status = kfac_fail(KFAC_ERR_FORMAT, "%u layers outside [1, %d]", v[1], KFAC_MAX_LAYERS);
        return;
    }
    s->inputs = (int)v[0], s->n_layers = (int)v[1], s->loss = (kfac_loss)v[2], s->input_pool = (int)v[3];
layers:
    for (int l = 0; l < s->n_layers && io->status == KFAC_OK; l++) {
        uint32_t u = (uint32_t)s->layers[l].units, a = (uint32_t)s->layers[l].activation;
        kfac_ckio_u32(io, &u);
        kfac_ckio_u32(io, &a);
        s->layers[l].units = (int)u;
        s->layers[l].activation = (kfac_activation)a;
    }
    /* version 3: the spatial part (layer kinds, windows, the input's
     * shape), written only for a network that has one, so a dense
     * network's checkpoint stays readable by version 1 and 2 readers */
    int spatial = s->input_h || s->input_w || s->input_c;
    for (int l = 0; l < s->n_layers; l++)
        spatial |= s->layers[l].kind != KFAC_LAYER_DENSE;
    if (io->mode == KFAC_CKIO_WRITE && spatial)
        io->version = KFAC_MAX(io->version, 3);
    if (io->version < 3)
        return;
    int shape[3] = {s->input_h, s->input_w, s->input_c};
    for (int i = 0; i < 3; i++)
        kfac_ckio_int(io, &shape[i]);
    s->input_h = shape[0], s->input_w = shape[1], s->input_c = shape[2];
    for (int l = 0; l < s->n_layers && io->status == KFAC_OK; l++) {
        kfac_layer_spec *ls = &s->layers[l];
        int f[5] = {(int)ls->kind, ls->kernel_h, ls->kernel_w, ls->stride, ls->pad};
        for (int i = 0; i < 5; i++)
            kfac_ckio_int(io, &f[i]);
        ls->kind = (kfac_layer_kind)f[0];
        ls->kernel_h = f[1], ls->kernel_w = f[2], ls->stride = f[3], ls->pad = f[4];
    }
}

static int same_arch(const kfac_net_spec *a, const kfac_net_spec *b)
{
    if (a->inputs != b->inputs || a->n_layers != b->n_layers || a->loss != b->loss || a->input_pool != b->input_pool)
        return 0;
    if (a->input_h != b->input_h || a->input_w != b->input_w || a->input_c != b->input_c)
        return 0;
    for (int l = 0; l < a->n_layers; l++) {
        const kfac_layer_spec *x = &a->layers[l], *y = &b->layers[l];
        if (x->units != y->units || x->activation != y->activation || x->kind != y->kind ||
            x->kernel_h != y->kernel_h || x->kernel_w != y->kernel_w || x->stride != y->stride || x->pad != y->pad)
            return 0;
    }
    return 1;
}

/* Read the architecture and compare it with the network's. */
static kfac_status check_arch(kfac_ckio *io, const kfac_net_spec *have_spec, const char *path)
{
    kfac_net_spec file;
    memset(&file, 0, sizeof file);
    arch_io(io, &file);
    if (io->status != KFAC_OK)
        return kfac_ckio_fail_file(io->status, path);
    if (!same_arch(&file, have_spec)) {
        char a[512], b[512];
        kfac_net_spec_describe(&file, a, sizeof a);
        kfac_net_spec_describe(have_spec, b, sizeof b);
        return kfac_fail(KFAC_ERR_SHAPE, "%s: the checkpoint holds another network (%s), not this one (%s)", path, a,
                         b);
    }
    return KFAC_OK;
}

kfac_status kfac_trainer_save(const kfac_trainer *t, const char *path)
{
    kfac_clear_error();
    if (!t || !path || !*path)
        return kfac_fail(KFAC_ERR_INVALID_ARG, "kfac_trainer_save: NULL argument");
    /* the visitors take the object mutably, but WRITE only reads it */
    kfac_trainer *tw = (kfac_trainer *)t;
    kfac_net_spec spec = *kfac_net_get_spec(kfac_trainer_net(tw));
    uint32_t kind = (uint32_t)kfac_trainer_optimizer(t);
    kfac_ckio io;
    kfac_ckio_start_write(&io);
    arch_io(&io, &spec);
    kfac_ckio_u32(&io, &kind);
    kfac_trainer_io(tw, &io);
    kfac_status st = kfac_ckio_finish_write(&io, KFAC_CKPT_TRAINER, path);
    return st;
}

kfac_status kfac_trainer_load(kfac_trainer *t, const char *path)
{
    kfac_clear_error();
    if (!t || !path || !*path)
        return kfac_fail(KFAC_ERR_INVALID_ARG, "kfac_trainer_load: NULL argument");
    unsigned char *data = NULL;
    kfac_ckio io, check;
    kfac_status st = kfac_ckio_read_file(path, KFAC_CKPT_TRAINER, &data, &io);
    if (st == KFAC_OK)
        st = check_arch(&io, kfac_net_get_spec(kfac_trainer_net(t)), path);
    uint32_t kind = 0;
    kfac_optimizer_kind have = kfac_trainer_optimizer(t);
    if (st == KFAC_OK) {
        kfac_ckio_u32(&io, &kind);
        if (io.status == KFAC_OK && kind != (uint32_t)have) {
            const char *name = kind < KFAC_OPT_COUNT ? kfac_optimizer_name((kfac_optimizer_kind)kind) : NULL;
            st = kfac_fail(KFAC_ERR_SHAPE, "%s: the checkpoint was written by optimizer %s, this trainer uses %s",
                           path, name ? name : "(unknown)", kfac_optimizer_name(have));
        }
    }
    if (st == KFAC_OK) {
        /* a dry run first: every size, kind and the exact length checked
         * before the trainer changes */
        check = io;
        check.mode = KFAC_CKIO_CHECK;
        kfac_trainer_io(t, &check);
        if (check.status == KFAC_OK && check.pos != check.len)
            check.status = kfac_fail(KFAC_ERR_FORMAT, "%zu byte%s left over after the trainer's state",
                                     check.len - check.pos, KFAC_S(check.len - check.pos));
        if ((st = check.status) != KFAC_OK)
            st = kfac_ckio_fail_file(st, path);
    }
    /* in a process group all ranks load, or none does */
    if ((st = kfac_trainer_agree(t, st)) != KFAC_OK)
        goto done;
    kfac_trainer_io(t, &io);
    if ((st = io.status) != KFAC_OK)
        st = kfac_ckio_fail_file(st, path);
done:
    free(data);
    return st;
}

kfac_status kfac_net_load_checkpoint(kfac_net *net, const char *path)
{
    kfac_clear_error();
    if (!net || !path || !*path)
        return kfac_fail(KFAC_ERR_INVALID_ARG, "kfac_net_load_checkpoint: NULL argument");
    unsigned char *data;
    kfac_ckio io;
    kfac_status st = kfac_ckio_read_file(path, KFAC_CKPT_TRAINER, &data, &io);
    if (st != KFAC_OK)
        return st;
    if ((st = check_arch(&io, &net->spec, path)) != KFAC_OK)
        goto done;
    uint32_t kind;
    kfac_ckio_u32(&io, &kind);
    /* theta leads the trainer's state; its length is checked before it is
     * stored */
    kfac_ckio_floats(&io, net->theta, net->n_params, "network parameters");
    if ((st = io.status) != KFAC_OK)
        st = kfac_ckio_fail_file(st, path);
done:
    free(data);
    return st;
}

kfac_status kfac_precond_save(const kfac_precond *pc, const char *path)
{
    kfac_clear_error();
    if (!pc || !path || !*path)
        return kfac_fail(KFAC_ERR_INVALID_ARG, "kfac_precond_save: NULL argument");
    kfac_ckio io;
    kfac_ckio_start_write(&io);
    kfac_precond_io((kfac_precond *)pc, &io);
    return kfac_ckio_finish_write(&io, KFAC_CKPT_PRECOND, path);
}

kfac_status kfac_precond_load(kfac_precond *pc, const char *path)
{
    kfac_clear_error();
    if (!pc || !path || !*path)
        return kfac_fail(KFAC_ERR_INVALID_ARG, "kfac_precond_load: NULL argument");
    unsigned char *data;
    kfac_ckio io;
    kfac_status st = kfac_ckio_read_file(path, KFAC_CKPT_PRECOND, &data, &io);
    if (st != KFAC_OK)
        return st;
    kfac_ckio check = io;
    check.mode = KFAC_CKIO_CHECK;
    kfac_precond_io(pc, &check);
    if (check.status == KFAC_OK && check.pos != check.len)
        check.status = kfac_fail(KFAC_ERR_FORMAT, "%zu byte%s left over after the preconditioner's state",
                                 check.len - check.pos, KFAC_S(check.len - check.pos));
    if ((st = check.status) == KFAC_OK) {
        kfac_precond_io(pc, &io);
        st = io.status;
    }
    if (st != KFAC_OK)
        st = kfac_ckio_fail_file(st, path);
    free(data);
    return st;
}
