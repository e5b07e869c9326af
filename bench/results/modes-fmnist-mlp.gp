set terminal pngcairo size 1400,560 font 'DejaVu Sans,11'
set output 'bench/results/modes-fmnist-mlp.png'
set datafile separator ','
set key top right
set grid
set logscale y
set ytics 2
set format y '%g'
set multiplot layout 1,2 title 'nets/fmnist-mlp, K-FAC in each inversion mode: training loss'
set xlabel 'training seconds (evaluation excluded)'
set ylabel 'training loss'
plot 'bench/results/fmnist-mlp-momentum-lr0.05-b512-modes.csv' using 3:4 every ::1 with linespoints lw 3 lc rgb '#2ca02c' pt 7 ps 0.8 title 'SGD-momentum lr 0.05, batch 512', 'bench/results/fmnist-mlp-kfac-defaults-b512-d0.03-cholesky.csv' using 3:4 every ::1 with linespoints lw 3 lc rgb '#1f77b4' pt 7 ps 0.8 title 'cholesky inversion, batch 512', 'bench/results/fmnist-mlp-kfac-defaults-b512-d0.03-eigen.csv' using 3:4 every ::1 with linespoints lw 3 lc rgb '#2ca02c' pt 7 ps 0.8 title 'eigen inversion, batch 512', 'bench/results/fmnist-mlp-kfac-defaults-b512-d0.03-lowrank.csv' using 3:4 every ::1 with linespoints lw 3 lc rgb '#d62728' pt 7 ps 0.8 title 'lowrank inversion, batch 512', 'bench/results/fmnist-mlp-kfac-defaults-b512-d0.03-ekfac.csv' using 3:4 every ::1 with linespoints lw 3 lc rgb '#9467bd' pt 7 ps 0.8 title 'ekfac inversion, batch 512', 'bench/results/fmnist-mlp-kfac-defaults-b512-d0.03-tridiag.csv' using 3:4 every ::1 with linespoints lw 3 lc rgb '#ff7f0e' pt 7 ps 0.8 title 'tridiag inversion, batch 512'
set xlabel 'epochs'
set ylabel 'training loss'
plot 'bench/results/fmnist-mlp-momentum-lr0.05-b512-modes.csv' using 1:4 every ::1 with linespoints lw 3 lc rgb '#2ca02c' pt 7 ps 0.8 title 'SGD-momentum lr 0.05, batch 512', 'bench/results/fmnist-mlp-kfac-defaults-b512-d0.03-cholesky.csv' using 1:4 every ::1 with linespoints lw 3 lc rgb '#1f77b4' pt 7 ps 0.8 title 'cholesky inversion, batch 512', 'bench/results/fmnist-mlp-kfac-defaults-b512-d0.03-eigen.csv' using 1:4 every ::1 with linespoints lw 3 lc rgb '#2ca02c' pt 7 ps 0.8 title 'eigen inversion, batch 512', 'bench/results/fmnist-mlp-kfac-defaults-b512-d0.03-lowrank.csv' using 1:4 every ::1 with linespoints lw 3 lc rgb '#d62728' pt 7 ps 0.8 title 'lowrank inversion, batch 512', 'bench/results/fmnist-mlp-kfac-defaults-b512-d0.03-ekfac.csv' using 1:4 every ::1 with linespoints lw 3 lc rgb '#9467bd' pt 7 ps 0.8 title 'ekfac inversion, batch 512', 'bench/results/fmnist-mlp-kfac-defaults-b512-d0.03-tridiag.csv' using 1:4 every ::1 with linespoints lw 3 lc rgb '#ff7f0e' pt 7 ps 0.8 title 'tridiag inversion, batch 512'
unset multiplot
