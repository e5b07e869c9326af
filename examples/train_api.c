/* train_api.c - embedding example: train a network through libkfac's API.
 * nets/small.net (784-32-10) with K-FAC for 2 epochs on 6000 Fashion-MNIST
 * images; then predict, save a checkpoint, and load it into a fresh network.
 * Usage: train_api NETS_DIR DATA_DIR [CHECKPOINT]. Build: cc train_api.c $(pkg-config
 * --cflags --libs kfac). Exit 0 if the test accuracy rises from chance to
 * at least 0.75 and the checkpoint reproduces the network. */
#include <kfac.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int fail(const char *what)
{
    fprintf(stderr, "train_api: %s: %s\n", what, kfac_last_error());
    return 1;
}

int main(int argc, char **argv)
{
    if (argc < 3) {
        fprintf(stderr, "usage: train_api NETS_DIR DATA_DIR [CHECKPOINT]\n");
        return 2;
    }
    const char *ckpt = argc > 3 ? argv[3] : "train_api.ckpt";
    /* the installed header and the library it links describe one release */
    if (strcmp(kfac_version(), KFAC_VERSION_STRING) != 0) {
        fprintf(stderr, "train_api: library %s, header %s\n", kfac_version(), KFAC_VERSION_STRING);
        return 1;
    }
    char netfile[4096];
    snprintf(netfile, sizeof netfile, "%s/small.net", argv[1]);
    kfac_net_spec spec;
    kfac_train_params p;
    kfac_dataset train, test;
    if (kfac_netfile_load(netfile, &spec, &p) != KFAC_OK)
        return fail("net file");
    if (kfac_mnist_load(argv[2], "train", &train) != KFAC_OK || kfac_mnist_load(argv[2], "t10k", &test) != KFAC_OK)
        return fail("data");
    kfac_dataset tr = train, te = test; /* slices sharing the buffers */
    tr.n = 6000;
    te.n = 2000;
    p.optimizer = KFAC_OPT_KFAC;
    p.optim.lr = 0.03f;
    p.epochs = 2;

    kfac_trainer *t;
    if (kfac_trainer_new(&spec, &p, &tr, &t) != KFAC_OK)
        return fail("trainer");
    kfac_net *net = kfac_trainer_net(t);
    double loss0, acc0, loss = 0.0, acc = 0.0;
    if (kfac_evaluate(net, &te, &loss0, &acc0) != KFAC_OK)
        return fail("evaluate");
    for (int e = 0; e < p.epochs; e++) {
        kfac_epoch_stats s;
        if (kfac_trainer_epoch(t, NULL, NULL, &s) != KFAC_OK)
            return fail("epoch");
        if (kfac_evaluate(net, &te, &s.test_loss, &s.test_acc) != KFAC_OK)
            return fail("evaluate");
        printf("train_api: epoch %d train loss %.4f test loss %.4f accuracy %.4f\n", s.epoch, s.train_loss,
               s.test_loss, s.test_acc);
        acc = s.test_acc;
        loss = s.test_loss;
    }

    /* class probabilities of the first test image */
    float prob[10], sum = 0.0f;
    if (kfac_net_predict(net, te.x, 1, prob) != KFAC_OK)
        return fail("predict");
    int best = 0;
    for (int k = 0; k < 10; k++) {
        sum += prob[k];
        best = prob[k] > prob[best] ? k : best;
    }
    printf("train_api: image 0 is class %d with p %.3f (label %d)\n", best, prob[best], te.labels[0]);

    /* a checkpoint, loaded into a fresh network, gives the same loss (the
     * same batch size, so evaluation sums in the same order) */
    kfac_net *copy;
    double loss_copy;
    if (kfac_trainer_save(t, ckpt) != KFAC_OK || kfac_net_new(&spec, p.batch, &copy) != KFAC_OK ||
        kfac_net_load_checkpoint(copy, ckpt) != KFAC_OK || kfac_evaluate(copy, &te, &loss_copy, NULL) != KFAC_OK)
        return fail("checkpoint");
    remove(ckpt);

    int ok = acc0 < 0.3 && acc >= 0.75 && loss < loss0 && sum > 0.999f && sum < 1.001f && loss_copy == loss;
    printf("train_api: accuracy %.4f -> %.4f, checkpoint loss %s\n", acc0, acc, loss_copy == loss ? "equal" : "DIFFERS");
    kfac_net_free(copy);
    kfac_trainer_free(t);
    kfac_dataset_free(&train);
    kfac_dataset_free(&test);
    return ok ? 0 : 1;
}
