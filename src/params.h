/* params.h - typed values with ranges, and the table of training
 * parameters. One row per [train] or [kfac] setting gives its name, flag,
 * type, range, default and one line of documentation; the defaults, the
 * validation, the net file's keys, the command line's flags and --help,
 * the process group's state hash and access by name all come from it. */
#ifndef KFAC_PARAMS_H
#define KFAC_PARAMS_H

#include <stddef.h>

#include "kfac.h"

typedef enum kfac_value_type {
    KFAC_V_INT,   /* int, range [lo, hi] */
    KFAC_V_FLOAT, /* float, range per bounds (the float stored is checked) */
    KFAC_V_U64,   /* uint64_t, any non-negative integer */
    KFAC_V_ENUM   /* an enum stored as int, named by name_of */
} kfac_value_type;

/* Which ends of [lo, hi] are excluded. */
enum { KFAC_CLOSED = 0, KFAC_OPEN_LO = 1, KFAC_OPEN_HI = 2 };

typedef struct kfac_value_spec {
    kfac_value_type type;
    double lo, hi;
    int bounds;
    const char *what;               /* an enum's name in messages ("loss") */
    const char *(*name_of)(int k);  /* an enum's names, NULL past the last */
    int count;                      /* an enum's values */
} kfac_value_spec;

/* text -> *field as v says, the field untouched on failure, with the
 * message "key = text is outside (0, 1000]", "key needs an integer, got
 * 'x'", "unknown loss 'x' (softmax_xent, ...)" (no location: the caller
 * adds its own). */
kfac_status kfac_value_parse(const kfac_value_spec *v, const char *key, const char *text, void *field);
/* "(0, 1000]", "[1, 1000000]", "0 or more", or "sgd | momentum | ..." */
void kfac_value_range(const kfac_value_spec *v, char *buf, size_t size);

/* The structs a parameter lives in. */
typedef enum { KFAC_PART_TRAIN, KFAC_PART_OPTIM, KFAC_PART_KFAC } kfac_param_part;

typedef struct kfac_param_def {
    const char *section; /* "train" or "kfac": the net file's section */
    const char *key;     /* the key there, and the name for access by name */
    const char *flag;    /* the command line's flag */
    kfac_param_part part;
    size_t offset;       /* within its part's struct */
    kfac_value_spec v;
    double def;          /* the default (an enum's value) */
    const char *resets;  /* the flag also restores this parameter to its
                            default ("kfac.lr": --lr wins over [kfac] lr) */
    const char *doc;     /* one line of documentation */
} kfac_param_def;

/* rows at most (the net-file parser's bookkeeping) */
#define KFAC_MAX_PARAMS 64

extern const kfac_param_def kfac_param_defs[];
extern const int kfac_param_defs_count;

/* The row of section's key (section NULL: the only row with that key), or
 * -1. */
int kfac_param_find(const char *section, const char *key);
/* Row i's field in p. */
void *kfac_param_field(const kfac_param_def *d, kfac_train_params *p);

/* A parameter as a name finds it: its row and its field in one
 * kfac_train_params. An optimizer's own section ("adam") has the [train]
 * rows of kfac_optim_params, in p->per_optimizer, where NaN means
 * "inherit". */
typedef struct kfac_param_slot {
    const kfac_param_def *d;
    void *field;
    int inherits; /* an optimizer's own setting: NaN, "inherit", allowed */
    char name[64]; /* for messages: "damping", "kfac.lr", "adam.lr" */
} kfac_param_slot;

/* The slot of section's key (section NULL: a key one section alone has);
 * -1 if there is none. */
int kfac_param_slot_find(kfac_train_params *p, const char *section, const char *key, kfac_param_slot *out);
/* Set a slot from text (the net file's and kfac_train_params_set's rules). */
kfac_status kfac_param_slot_set(const kfac_param_slot *s, const char *value);
/* The first-order optimizers that have a section of their own, "sgd" ...
 * "adam": whether `section` names one, and which. */
int kfac_param_optimizer_section(const char *section, kfac_optimizer_kind *kind);

#endif
