set terminal pngcairo size 1400,560 font 'DejaVu Sans,11'
set output 'bench/results/modes-autoencoder.png'
set datafile separator ','
set key top right
set grid
set logscale y
set ytics 2
set format y '%g'
set multiplot layout 1,2 title 'nets/mnist-autoencoder, K-FAC in each inversion mode: training cross-entropy'
set xlabel 'training seconds (evaluation excluded)'
set ylabel 'training cross-entropy per image'
plot 'bench/results/autoencoder-nesterov-lr0.001-modes.csv' using 3:7 every ::1 with linespoints lw 3 lc rgb '#1f77b4' pt 7 ps 0.8 title 'Nesterov lr 0.001', 'bench/results/autoencoder-kfac-defaults-cholesky.csv' using 3:7 every ::1 with linespoints lw 3 lc rgb '#1f77b4' pt 7 ps 0.8 title 'cholesky inversion', 'bench/results/autoencoder-kfac-defaults-eigen.csv' using 3:7 every ::1 with linespoints lw 3 lc rgb '#2ca02c' pt 7 ps 0.8 title 'eigen inversion', 'bench/results/autoencoder-kfac-defaults-lowrank.csv' using 3:7 every ::1 with linespoints lw 3 lc rgb '#d62728' pt 7 ps 0.8 title 'lowrank inversion', 'bench/results/autoencoder-kfac-defaults-ekfac.csv' using 3:7 every ::1 with linespoints lw 3 lc rgb '#9467bd' pt 7 ps 0.8 title 'ekfac inversion', 'bench/results/autoencoder-kfac-defaults-tridiag.csv' using 3:7 every ::1 with linespoints lw 3 lc rgb '#ff7f0e' pt 7 ps 0.8 title 'tridiag inversion'
set xlabel 'iterations'
set ylabel 'training cross-entropy per image'
plot 'bench/results/autoencoder-nesterov-lr0.001-modes.csv' using 2:7 every ::1 with linespoints lw 3 lc rgb '#1f77b4' pt 7 ps 0.8 title 'Nesterov lr 0.001', 'bench/results/autoencoder-kfac-defaults-cholesky.csv' using 2:7 every ::1 with linespoints lw 3 lc rgb '#1f77b4' pt 7 ps 0.8 title 'cholesky inversion', 'bench/results/autoencoder-kfac-defaults-eigen.csv' using 2:7 every ::1 with linespoints lw 3 lc rgb '#2ca02c' pt 7 ps 0.8 title 'eigen inversion', 'bench/results/autoencoder-kfac-defaults-lowrank.csv' using 2:7 every ::1 with linespoints lw 3 lc rgb '#d62728' pt 7 ps 0.8 title 'lowrank inversion', 'bench/results/autoencoder-kfac-defaults-ekfac.csv' using 2:7 every ::1 with linespoints lw 3 lc rgb '#9467bd' pt 7 ps 0.8 title 'ekfac inversion', 'bench/results/autoencoder-kfac-defaults-tridiag.csv' using 2:7 every ::1 with linespoints lw 3 lc rgb '#ff7f0e' pt 7 ps 0.8 title 'tridiag inversion'
unset multiplot
