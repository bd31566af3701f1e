# SPDX-License-Identifier: MIT
# Peak mappings and kernel calls per policy and workload (model backend).
# Called by scripts/bench-report with datafile and out set:
#   gnuplot -e "datafile='policy.dat'; out='performance-policy.svg'" bench/policy.gp
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
set yrange [1:*]
set grid ytics
set key outside right top vertical
set xtics rotate by -20 noenhanced
# one cluster per data line; without a fixed range gnuplot leaves empty space
stats datafile using 2 nooutput
set xrange [-0.6:STATS_records - 0.4]
set multiplot layout 2,1 title "libcvmdma policies on the model backend (same traces, one run)"
set title "peak live mappings (iommufd rules: no limit; the line is type1's default limit)"
set arrow 1 from graph 0, first 65535 to graph 1, first 65535 nohead dt 2 lw 2 lc rgb "red"
plot datafile using 2:xtic(1) title "per-page" lc rgb "#c0392b", \
     '' using 3 title "auto (2 MiB)" lc rgb "#2980b9", \
     '' using 4 title "unbounded" lc rgb "#27ae60", \
     '' using 5 title "auto on a cut backend" lc rgb "#8e44ad"
unset arrow 1
set title "kernel calls (map + unmap + cut)"
plot datafile using 6:xtic(1) title "per-page" lc rgb "#c0392b", \
     '' using 7 title "auto (2 MiB)" lc rgb "#2980b9", \
     '' using 8 title "unbounded" lc rgb "#27ae60", \
     '' using 9 title "auto on a cut backend" lc rgb "#8e44ad"
unset multiplot
