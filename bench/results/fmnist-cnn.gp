set terminal pngcairo size 1400,560 font 'DejaVu Sans,11'
set output '/tmp/wb/fmnist-cnn.png'
set datafile separator ','
set key top right
set grid
set logscale y
set ytics 2
set format y '%g'
set multiplot layout 1,2 title 'nets/fmnist-cnn on Fashion-MNIST: training loss (mean over each epoch)'
set xlabel 'training seconds (evaluation excluded)'
set ylabel 'training loss'
plot '/tmp/wb/fmnist-cnn-sgd-lr0.1.csv' using 3:4 every ::1 with linespoints lw 3 lc rgb '#7f7f7f' pt 7 ps 0.8 title 'SGD lr 0.1', '/tmp/wb/fmnist-cnn-momentum-lr0.01.csv' using 3:4 every ::1 with linespoints lw 1 lc rgb '#2ca02c' pt 7 ps 0.3 title 'SGD-momentum lr 0.01', '/tmp/wb/fmnist-cnn-nesterov-lr0.01.csv' using 3:4 every ::1 with linespoints lw 1 lc rgb '#1f77b4' pt 7 ps 0.3 title 'Nesterov lr 0.01', '/tmp/wb/fmnist-cnn-adam-lr0.001.csv' using 3:4 every ::1 with linespoints lw 3 lc rgb '#ff7f0e' pt 7 ps 0.8 title 'Adam lr 0.001', '/tmp/wb/fmnist-cnn-kfac-defaults-d0.03.csv' using 3:4 every ::1 with linespoints lw 3 lc rgb '#d62728' pt 7 ps 0.8 title 'K-FAC damping 0.03', '/tmp/wb/fmnist-cnn-sgd-lr0.03.csv' using 3:4 every ::1 with linespoints lw 1 lc rgb '#7f7f7f' pt 7 ps 0.3 title 'SGD lr 0.03', '/tmp/wb/fmnist-cnn-momentum-lr0.03.csv' using 3:4 every ::1 with linespoints lw 3 lc rgb '#2ca02c' pt 7 ps 0.8 title 'SGD-momentum lr 0.03', '/tmp/wb/fmnist-cnn-nesterov-lr0.03.csv' using 3:4 every ::1 with linespoints lw 3 lc rgb '#1f77b4' pt 7 ps 0.8 title 'Nesterov lr 0.03', '/tmp/wb/fmnist-cnn-adam-lr0.0003.csv' using 3:4 every ::1 with linespoints lw 1 lc rgb '#ff7f0e' pt 7 ps 0.3 title 'Adam lr 0.0003', '/tmp/wb/fmnist-cnn-kfac-defaults-d0.1.csv' using 3:4 every ::1 with linespoints lw 1 lc rgb '#d62728' pt 7 ps 0.3 title 'K-FAC damping 0.1'
set xlabel 'epochs'
set ylabel 'training loss'
plot '/tmp/wb/fmnist-cnn-sgd-lr0.1.csv' using 1:4 every ::1 with linespoints lw 3 lc rgb '#7f7f7f' pt 7 ps 0.8 title 'SGD lr 0.1', '/tmp/wb/fmnist-cnn-momentum-lr0.01.csv' using 1:4 every ::1 with linespoints lw 1 lc rgb '#2ca02c' pt 7 ps 0.3 title 'SGD-momentum lr 0.01', '/tmp/wb/fmnist-cnn-nesterov-lr0.01.csv' using 1:4 every ::1 with linespoints lw 1 lc rgb '#1f77b4' pt 7 ps 0.3 title 'Nesterov lr 0.01', '/tmp/wb/fmnist-cnn-adam-lr0.001.csv' using 1:4 every ::1 with linespoints lw 3 lc rgb '#ff7f0e' pt 7 ps 0.8 title 'Adam lr 0.001', '/tmp/wb/fmnist-cnn-kfac-defaults-d0.03.csv' using 1:4 every ::1 with linespoints lw 3 lc rgb '#d62728' pt 7 ps 0.8 title 'K-FAC damping 0.03', '/tmp/wb/fmnist-cnn-sgd-lr0.03.csv' using 1:4 every ::1 with linespoints lw 1 lc rgb '#7f7f7f' pt 7 ps 0.3 title 'SGD lr 0.03', '/tmp/wb/fmnist-cnn-momentum-lr0.03.csv' using 1:4 every ::1 with linespoints lw 3 lc rgb '#2ca02c' pt 7 ps 0.8 title 'SGD-momentum lr 0.03', '/tmp/wb/fmnist-cnn-nesterov-lr0.03.csv' using 1:4 every ::1 with linespoints lw 3 lc rgb '#1f77b4' pt 7 ps 0.8 title 'Nesterov lr 0.03', '/tmp/wb/fmnist-cnn-adam-lr0.0003.csv' using 1:4 every ::1 with linespoints lw 1 lc rgb '#ff7f0e' pt 7 ps 0.3 title 'Adam lr 0.0003', '/tmp/wb/fmnist-cnn-kfac-defaults-d0.1.csv' using 1:4 every ::1 with linespoints lw 1 lc rgb '#d62728' pt 7 ps 0.3 title 'K-FAC damping 0.1'
unset multiplot
