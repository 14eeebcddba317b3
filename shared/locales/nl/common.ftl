# Woorden die elke pagina en e-mail deelt. Elk bestand heeft in elke taal dezelfde berichten.

service-name = Koppelingsbeheer
month-1 = januari
month-2 = februari
month-3 = maart
month-4 = april
month-5 = mei
month-6 = juni
month-7 = juli
month-8 = augustus
month-9 = september
month-10 = oktober
month-11 = november
month-12 = december
# Een moment zoals mensen het lezen: "1 december 2026 om 15:05 CET".
moment = { $day } { $month } { $year } om { $time } { $zone }
