# SPDX-License-Identifier: MIT
# ioctls and wall time per policy on the real kernels (vIOMMU guest, TCG).
# Called by scripts/bench-report with datafile and out set:
#   gnuplot -e "datafile='guest.dat'; out='performance-guest.svg'" bench/guest.gp
if (!exists("term")) term = "svg"
# term='png' for a quick look at the plot in an image viewer
if (term eq "png") {
    set terminal pngcairo size 1100,760 font "sans,10"
} else {
    set terminal svg size 1100,760 dynamic font "sans,12"
}
set output out
set datafile separator "\t"
set style data histograms
set style histogram clustered gap 1
set style fill solid 0.85 border -1
set boxwidth 0.9
set logscale y 10
set format y "10^{%T}"
set grid ytics
set key outside right top vertical
set xtics rotate by -20 noenhanced
# one cluster per data line; without a fixed range gnuplot leaves empty space
stats datafile using 2 nooutput
set xrange [-0.6:STATS_records - 0.4]
set multiplot layout 2,1 \
    title "libcvmdma policies on real kernels (vIOMMU guest under TCG, one boot per kernel)"
set title "ioctls per workload (all phases)"
set yrange [0.8:*]
plot datafile using ($2 > 0 ? $2 : 1):xtic(1) title "per-page" lc rgb "#c0392b", \
     '' using ($3 > 0 ? $3 : 1) title "auto" lc rgb "#2980b9", \
     '' using ($4 > 0 ? $4 : 1) title "unbounded" lc rgb "#27ae60"
set title "wall time, ms (emulated: compare ratios only)"
set yrange [*:*]
plot datafile using 5:xtic(1) title "per-page" lc rgb "#c0392b", \
     '' using 6 title "auto" lc rgb "#2980b9", \
     '' using 7 title "unbounded" lc rgb "#27ae60"
unset multiplot
