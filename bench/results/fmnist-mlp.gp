set terminal pngcairo size 1400,560 font 'DejaVu Sans,11'
set output 'bench/results/fmnist-mlp.png'
set datafile separator ','
set key top right
set grid
set logscale y
set ytics 2
set format y '%g'
set multiplot layout 1,2 title 'nets/fmnist-mlp on Fashion-MNIST: training loss (mean over each epoch)'
set xlabel 'training seconds (evaluation excluded)'
set ylabel 'training loss'
plot 'bench/results/fmnist-mlp-momentum-lr0.05-b128.csv' using 3:4 every ::1 with linespoints lw 3 lc rgb '#2ca02c' pt 7 ps 0.8 title 'SGD-momentum lr 0.05, batch 128', 'bench/results/fmnist-mlp-nesterov-lr0.05-b128.csv' using 3:4 every ::1 with linespoints lw 3 lc rgb '#1f77b4' pt 7 ps 0.8 title 'Nesterov lr 0.05, batch 128', 'bench/results/fmnist-mlp-adam-lr0.003-b512.csv' using 3:4 every ::1 with linespoints lw 3 lc rgb '#ff7f0e' pt 7 ps 0.8 title 'Adam lr 0.003, batch 512', 'bench/results/fmnist-mlp-kfac-defaults-b512-d0.03.csv' using 3:4 every ::1 with linespoints lw 3 lc rgb '#d62728' pt 7 ps 0.8 title 'K-FAC damping 0.03, batch 512'
set xlabel 'epochs'
set ylabel 'training loss'
plot 'bench/results/fmnist-mlp-momentum-lr0.05-b128.csv' using 1:4 every ::1 with linespoints lw 3 lc rgb '#2ca02c' pt 7 ps 0.8 title 'SGD-momentum lr 0.05, batch 128', 'bench/results/fmnist-mlp-nesterov-lr0.05-b128.csv' using 1:4 every ::1 with linespoints lw 3 lc rgb '#1f77b4' pt 7 ps 0.8 title 'Nesterov lr 0.05, batch 128', 'bench/results/fmnist-mlp-adam-lr0.003-b512.csv' using 1:4 every ::1 with linespoints lw 3 lc rgb '#ff7f0e' pt 7 ps 0.8 title 'Adam lr 0.003, batch 512', 'bench/results/fmnist-mlp-kfac-defaults-b512-d0.03.csv' using 1:4 every ::1 with linespoints lw 3 lc rgb '#d62728' pt 7 ps 0.8 title 'K-FAC damping 0.03, batch 512'
unset multiplot
