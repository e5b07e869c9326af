/* kfac_opt.h - K-FAC as an optimizer type (optim_type.h): the engine of
 * precond.h driven from a kfac_net. */
#ifndef KFAC_KFAC_OPT_H
#define KFAC_KFAC_OPT_H

#include "optim_type.h"

extern const kfac_optimizer_type kfac_kfac_type;

#endif
