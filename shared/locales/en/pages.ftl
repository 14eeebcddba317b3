# Words of the pages people see in their browser.

page-health-ok = The service is running.
