# Plots of bench/report.py's data files. Called as
#   gnuplot -e "dir='DIR'; latsizes='10000 100000'; haveregen=1; havelat=1" bench/plot.gp
set terminal pngcairo size 900,600 font ",11"
set grid
set key top left

if (haveregen) {
    set output dir."/regen.png"
    set title "Regeneration of the four maps (median wall time, bars: min to max)"
    set logscale xy
    set xlabel "accounts (aliases = accounts, domains = accounts / 100)"
    set ylabel "wall time (s)"
    set xrange [700:1400000]
    set format x "%.0s%c"
    f = dir."/regen.dat"
    plot f using 1:2:3:4 with yerrorlines lw 2 title "mapsyncd --once, full write", \
         f using 1:5:6:7 with yerrorlines lw 2 title "mapsyncd --once, one row changed", \
         f using 1:11:12:13 with yerrorlines lw 2 title "(a) sync-config.sh", \
         f using 1:14:15:16 with yerrorlines lw 2 title "(a) durable", \
         f using 1:17:18:19 with yerrorlines lw 2 dt 2 title "floor: queries -> /dev/null"
    unset logscale
    unset xrange
    set format x "%g"
}

if (havelat) {
    set output dir."/latency.png"
    set title "Commit-to-file latency: share of commits visible in passwd within t"
    set xlabel "t (ms) from COMMIT to the new passwd line in the file"
    set ylabel "cumulative share"
    set logscale x
    set terminal pngcairo size 900,720 font ",11"
    set key outside below maxrows 3
    set yrange [0:1.02]
    # colour: who; dash: size (solid for the first size, dashed for the next)
    N = words(latsizes)
    plot for [i=1:N] dir."/latency-".word(latsizes,i)."-mapsyncd_0.dat" using 1:2 with steps lw 2 lc 1 dt i title "mapsyncd, debounce 0, ".word(latsizes,i)." accounts", \
         for [i=1:N] dir."/latency-".word(latsizes,i)."-mapsyncd_200.dat" using 1:2 with steps lw 2 lc 2 dt i title "mapsyncd, debounce 200 ms, ".word(latsizes,i)." accounts", \
         for [i=1:N] dir."/latency-".word(latsizes,i)."-b.dat" using 1:2 with steps lw 2 lc 3 dt i title "(b) inotifywait loop, ".word(latsizes,i)." accounts"
}
