/* plural.h - "s" unless a count is one, for messages: "1 epoch", "2 epochs".
 * Shared by the library (common.h) and the program (cli/cli.h). */
#ifndef KFAC_PLURAL_H
#define KFAC_PLURAL_H

#define KFAC_S(n) ((n) == 1 ? "" : "s")

#endif
