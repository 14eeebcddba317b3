# Words every page and email shares. Each file has the same messages in every language.

service-name = Connection broker
month-1 = January
month-2 = February
month-3 = March
month-4 = April
month-5 = May
month-6 = June
month-7 = July
month-8 = August
month-9 = September
month-10 = October
month-11 = November
month-12 = December
# A moment as people read it: "1 December 2026, 15:05 CET".
moment = { $day } { $month } { $year }, { $time } { $zone }
