set terminal pngcairo size 1400,560 font 'DejaVu Sans,11'
set output 'bench/results/autoencoder-squared.png'
set datafile separator ','
set key top right
set grid
set logscale y
set ytics 2
set format y '%g'
set multiplot layout 1,2 title 'nets/mnist-autoencoder on Fashion-MNIST: training squared reconstruction error per image (first 10000 training images)'
set xlabel 'training seconds (evaluation excluded)'
set ylabel 'training squared error per image'
plot 'bench/results/autoencoder-nesterov-lr0.0003.csv' using 3:8 every ::1 with linespoints lw 1 lc rgb '#1f77b4' pt 7 ps 0.3 title 'Nesterov lr 0.0003', 'bench/results/autoencoder-nesterov-lr0.001.csv' using 3:8 every ::1 with linespoints lw 3 lc rgb '#1f77b4' pt 7 ps 0.8 title 'Nesterov lr 0.001', 'bench/results/autoencoder-nesterov-lr0.003.csv' using 3:8 every ::1 with linespoints lw 1 lc rgb '#1f77b4' pt 7 ps 0.3 title 'Nesterov lr 0.003', 'bench/results/autoencoder-kfac-defaults.csv' using 3:8 every ::1 with linespoints lw 3 lc rgb '#d62728' pt 7 ps 0.8 title 'K-FAC defaults'
set xlabel 'iterations'
set ylabel 'training squared error per image'
plot 'bench/results/autoencoder-nesterov-lr0.0003.csv' using 2:8 every ::1 with linespoints lw 1 lc rgb '#1f77b4' pt 7 ps 0.3 title 'Nesterov lr 0.0003', 'bench/results/autoencoder-nesterov-lr0.001.csv' using 2:8 every ::1 with linespoints lw 3 lc rgb '#1f77b4' pt 7 ps 0.8 title 'Nesterov lr 0.001', 'bench/results/autoencoder-nesterov-lr0.003.csv' using 2:8 every ::1 with linespoints lw 1 lc rgb '#1f77b4' pt 7 ps 0.3 title 'Nesterov lr 0.003', 'bench/results/autoencoder-kfac-defaults.csv' using 2:8 every ::1 with linespoints lw 3 lc rgb '#d62728' pt 7 ps 0.8 title 'K-FAC defaults'
unset multiplot
